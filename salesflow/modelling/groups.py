"""Group features as a map-reduce: per-part sums and counts, reduced, then means.

``grp_<k>_<f>`` is the mean of source feature ``f`` over the series sharing key ``k``
(e.g. every department of a store) at the same origin and target date. When the series are
split into shards (Dask), a key's series span shards: each shard computes
:func:`group_sums` of its own rows, :func:`combine_group_sums` adds the parts (a few rows
per origin, date and key value: small), :func:`group_means_from` divides, and
:func:`group_features` puts the means on each shard's rows. One part (the whole panel)
gives the same means as a single ``groupby(...).mean()``: scoring and training in one
process go through the same functions. Pure pandas: no Prefect, no Dask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from salesflow.data.schema import DATE, ID

GROUP_SOURCES = ("seas_lag", "seas_mean3", "level_ratio")
# Sums and counts per key column: a frame indexed (origin, ds, <key value>) with columns
# "<source>:sum" and "<source>:n".
GroupSums = dict[str, pd.DataFrame]


def group_sums(
    frame: pd.DataFrame,
    codes: pd.DataFrame,
    keys: Sequence[str],
    sources: Sequence[str] = GROUP_SOURCES,
) -> GroupSums:
    """Per key column ``k`` of ``keys``: the sum (float64) and count of the non-missing
    values of each source column of ``frame`` per (origin, ds, value of k).

    ``frame``: columns unique_id, origin, ds and ``sources`` (feature rows of some series);
    ``codes``: indexed by unique_id, one column per key (``SalesData.static_frame()``).
    Rows whose series has no value of ``k`` take no part (their group mean is missing)."""
    out: GroupSums = {}
    if not keys:
        return out
    vals = frame[list(sources)].astype(np.float64).reset_index(drop=True)
    origin = pd.Series(frame["origin"].to_numpy(), name="origin")
    ds = pd.Series(frame[DATE].to_numpy(), name=DATE)
    for k in keys:
        grp = pd.Series(frame[ID].map(codes[k]).to_numpy(), name=k)
        g = vals.groupby([origin, ds, grp], sort=True)
        sums, counts = g.sum(), g.count()
        part = pd.concat(
            [sums.add_suffix(":sum"), counts.astype(np.int64).add_suffix(":n")], axis=1
        )
        out[k] = part[[f"{f}:{w}" for f in sources for w in ("sum", "n")]]
    return out


def combine_group_sums(parts: Iterable[GroupSums]) -> GroupSums:
    """The sums and counts of several parts (disjoint sets of series) added up."""
    frames: dict[str, list[pd.DataFrame]] = {}
    for part in parts:
        for k, frame in part.items():
            frames.setdefault(k, []).append(frame)
    out: GroupSums = {}
    for k, fs in frames.items():
        if len(fs) == 1:
            out[k] = fs[0]
            continue
        both = pd.concat(fs)
        out[k] = both.groupby(level=list(range(both.index.nlevels)), sort=True).sum()
    return out


def group_means_from(sums: GroupSums) -> dict[str, pd.DataFrame]:
    """Per key column: the means (sum / count, missing where the count is 0), indexed
    (origin, ds, value of the key), one column per source."""
    out = {}
    for k, frame in sums.items():
        sources = [c[: -len(":sum")] for c in frame.columns if c.endswith(":sum")]
        means = {}
        for f in sources:
            n = frame[f"{f}:n"].to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                means[f] = np.where(n > 0, frame[f"{f}:sum"].to_numpy() / np.maximum(n, 1), np.nan)
        out[k] = pd.DataFrame(means, index=frame.index)
    return out


def group_features(
    frame: pd.DataFrame,
    codes: pd.DataFrame,
    means: dict[str, pd.DataFrame],
    sources: Sequence[str] = GROUP_SOURCES,
) -> pd.DataFrame:
    """``grp_<k>_<f>`` for every key of ``means`` and source ``f``, one row per row of
    ``frame`` (columns unique_id, origin, ds; RangeIndex): the group mean at that row's
    origin, target date and value of ``k``; missing where the group has none."""
    out = pd.DataFrame(index=range(len(frame)))
    for k, table in means.items():
        grp = frame[ID].map(codes[k]).to_numpy()
        at = pd.MultiIndex.from_arrays(
            [frame["origin"].to_numpy(), frame[DATE].to_numpy(), grp], names=table.index.names
        )
        pos = table.index.get_indexer(at) if len(table) else np.full(len(frame), -1)
        for f in sources:
            col = table[f].to_numpy()
            out[f"grp_{k}_{f}"] = np.where(pos >= 0, col[np.maximum(pos, 0)], np.nan)
    return out


def frame_group_features(
    frame: pd.DataFrame,
    codes: pd.DataFrame,
    keys: Sequence[str],
    sources: Sequence[str] = GROUP_SOURCES,
) -> pd.DataFrame:
    """:func:`group_features` of ``frame`` with the means of its own rows (one part)."""
    return group_features(frame, codes, group_means_from(group_sums(frame, codes, keys, sources)))
