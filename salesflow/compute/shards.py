"""Splitting the panel's series into shards for scoring on Dask (one mapped task each).

The forecaster denoises last season per group of the last key (e.g. every store of one
department: :func:`features.seasonal.denoised_history`), so a shard holds whole groups of
that key; the means over the other keys (``grp_store_*``) span shards and are reduced
(:mod:`salesflow.modelling.groups`). Data with a single key has no groups: any split.
Pure pandas: no Prefect, no Dask.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from salesflow.data.schema import ID, SalesData


def series_shards(data: SalesData, model: Any, shard_series: int) -> list[list[str]]:
    """The series ids of ``data.history`` in shards of about ``shard_series`` each, in a
    deterministic order (sorted groups, sorted ids within each).

    With several keys (the model's ``keys_``, else ``data.keys``) whole groups of the last
    key are packed in order until the next group would pass ``shard_series``; a group larger
    than that is a shard of its own. With one key: sorted ids in chunks of ``shard_series``.
    """
    if shard_series < 1:
        raise ValueError(f"shard_series must be at least 1, got {shard_series}")
    keys = list(getattr(model, "keys_", None) or data.keys)
    static = data.static_frame()
    if len(keys) < 2:
        ids = sorted(static[ID].astype(str))
        return [ids[i : i + shard_series] for i in range(0, len(ids), shard_series)]
    label = static[keys[-1]].astype(str).fillna("")
    groups = static.assign(_group=label).groupby("_group", sort=True)[ID]
    shards: list[list[str]] = []
    current: list[str] = []
    for _, ids in groups:
        members = sorted(ids.astype(str))
        if current and len(current) + len(members) > shard_series:
            shards.append(current)
            current = []
        current.extend(members)
    if current:
        shards.append(current)
    return shards


def shard_data(data: SalesData, ids: list[str]) -> SalesData:
    """``data`` restricted to the series ``ids`` (history and future rows)."""
    keep = set(ids)
    history = data.history[data.history[ID].isin(keep)].reset_index(drop=True)
    future = data.future
    if len(future) and ID in future:
        future = future[future[ID].isin(keep)].reset_index(drop=True)
    return replace(data, history=history, future=future)


def shard_name(index: int, ids: list[str]) -> str:
    """A readable, stable name of a shard for task runs and staging: its position, size and
    first series, e.g. ``003-1200-series-from-1/12``."""
    first = ids[0] if ids else "none"
    return f"{index:03d}-{len(ids)}-series-from-{first}"
