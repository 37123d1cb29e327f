"""From partitions of the source to shards of series, without one process holding the panel.

The Dask batch forecast reads each partition on a worker (:mod:`salesflow.data.partitions`)
and keeps its rows there. Each partition hands back a small :class:`PartitionIndex` (its
series, their keys, statics, row counts, first and last dates); the flow's process merges
the indexes and plans shards of whole groups of the last key (:func:`plan_shuffle`, the
same :func:`~salesflow.compute.shards.series_shards` as the driver's plan). Then each
partition is cut per shard where it lives (:func:`split_partition`) and only those pieces
move to their shard, where :func:`assemble_shard` puts a series' rows from every partition
together (sorted by date; repeated (series, date) rows stay, for validation to report) and
makes the ``data.as_of`` cut. Per shard, :func:`check_shard` runs the validation gate and
returns what the plan still needs (its fingerprint, dates and holiday flags, all small);
:func:`scoring_plan` turns them into the :class:`~salesflow.modelling.scoring.ScoringPlan`
of the sharded scoring. Pure pandas: no Prefect, no Dask.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from features.build import period_step
from salesflow.compute.shards import series_shards, shard_name
from salesflow.config.settings import ValidationSection
from salesflow.data.canonical import SourceError
from salesflow.data.schema import DATE, ID, SalesData
from salesflow.data.validation import drop_short_series, validate_sales
from salesflow.data.validation_report import ValidationReport
from salesflow.modelling.holidays import HolidayPartial, combine_holidays, holiday_partial
from salesflow.modelling.registry import PrintParts, combine_prints, print_parts
from salesflow.modelling.scoring import ScoringPlan

_SHAPE = ("keys", "covariates", "static", "freq", "categorical", "known_ahead", "open")


@dataclass(frozen=True)
class PartitionIndex:
    """A partition's series (after the ``as_of`` cut): ``unique_id``, the keys, the static
    columns, ``n_rows``, ``first`` and ``last`` date; the last date before the cut; and the
    partition's columns and settings as a :class:`SalesData` without rows."""

    name: str
    series: pd.DataFrame
    raw_last: pd.Timestamp | None
    template: SalesData


def index_partition(data: SalesData, name: str, as_of: dt.date | None) -> PartitionIndex:
    """The small index of a partition read by :func:`~salesflow.data.partitions.load_partition`."""
    h = data.history
    raw_last = pd.Timestamp(h[DATE].max()) if len(h) else None
    if as_of is not None:
        h = h[h[DATE] <= pd.Timestamp(as_of)]
    stats = h.groupby(ID, sort=False)[DATE].agg(n_rows="size", first="min", last="max")
    static = replace(data, history=h).static_frame()
    series = static.merge(stats, left_on=ID, right_index=True, how="inner")
    template = replace(data, history=data.history.iloc[:0], future=data.future.iloc[:0])
    return PartitionIndex(name, series.reset_index(drop=True), raw_last, template)


@dataclass(frozen=True)
class ShufflePlan:
    """The shards planned from the indexes: names, each partition's ``unique_id`` ->
    shard number, which partitions hold rows of each shard, the origin, the last date
    before the ``as_of`` cut, and the panel's size."""

    names: list[str]
    assign: list[pd.Series]
    holders: list[list[int]]
    origin: pd.Timestamp
    raw_last: pd.Timestamp
    as_of: dt.date | None
    started_at: dt.datetime
    n_series: int
    n_rows: int
    freq: str


def panel_skeleton(indexes: list[PartitionIndex]) -> SalesData:
    """The panel without rows: its ``history`` holds one row per series (``unique_id``, the
    keys, the statics, ``n_rows``, ``first``, ``last``: :func:`merge_series`), with the
    partitions' columns and settings; enough for the data x champion checks and the plan."""
    series = merge_series(indexes)
    if series.empty:
        raise SourceError("the data has no rows (before data.as_of): nothing to forecast")
    return replace(indexes[0].template, history=series)


def plan_shuffle(
    indexes: list[PartitionIndex],
    skeleton: SalesData,
    model: Any,
    shard_series: int,
    origin: pd.Timestamp | None,
    as_of: dt.date | None,
) -> ShufflePlan:
    """Shards of about ``shard_series`` series (whole groups of the last key) from the
    partitions' indexes and their :func:`panel_skeleton`; ``origin`` None: the period after
    the panel's last date."""
    started = dt.datetime.now(dt.UTC)
    series = skeleton.history
    shards = series_shards(skeleton, model, shard_series)
    number = pd.Series(
        np.repeat(np.arange(len(shards)), [len(s) for s in shards]),
        index=pd.Index([i for s in shards for i in s], name=ID),
    )
    assign = [number.reindex(ix.series[ID].astype(str)).dropna().astype(int) for ix in indexes]
    holders: list[list[int]] = [[] for _ in shards]
    for p, a in enumerate(assign):
        for s in np.unique(a.to_numpy()):
            holders[int(s)].append(p)
    last = pd.Timestamp(series["last"].max())
    return ShufflePlan(
        names=[shard_name(i, ids) for i, ids in enumerate(shards)],
        assign=assign,
        holders=holders,
        origin=pd.Timestamp(origin) if origin is not None else last + period_step(skeleton.freq),
        raw_last=max(pd.Timestamp(ix.raw_last) for ix in indexes if ix.raw_last is not None),
        as_of=as_of,
        started_at=started,
        n_series=len(series),
        n_rows=int(series["n_rows"].sum()),
        freq=skeleton.freq,
    )


def merge_series(indexes: list[PartitionIndex]) -> pd.DataFrame:
    """One row per series over every partition (rows added, first and last dates; keys
    and statics of the partition holding its last date); SourceError when partitions
    differ in keys, covariates, static columns or frequency."""
    if not indexes:
        raise SourceError("the data source has no partitions")
    first = indexes[0]
    for ix in indexes[1:]:
        for attr in _SHAPE:
            mine, theirs = getattr(ix.template, attr), getattr(first.template, attr)
            if mine != theirs:
                raise SourceError(
                    f"partition {ix.name} has {attr} {mine!r}, partition {first.name} "
                    f"{theirs!r}: every file of data.path must have the same columns"
                )
    rows = pd.concat([ix.series for ix in indexes], ignore_index=True)
    rows[ID] = rows[ID].astype(str)
    stats = rows.groupby(ID, sort=True).agg(
        n_rows=("n_rows", "sum"), first=("first", "min"), last=("last", "max")
    )
    static = rows.sort_values("last", kind="stable").drop_duplicates(ID, keep="last")
    static = static.drop(columns=["n_rows", "first", "last"]).set_index(ID)
    return static.reindex(stats.index).join(stats).reset_index()


def split_partition(data: SalesData, assign: pd.Series) -> dict[int, SalesData]:
    """A partition's rows cut per shard: shard number -> its series' history and future
    rows (``assign``: ``unique_id`` -> shard number; rows of other series are dropped)."""
    h_no = data.history[ID].astype(str).map(assign)
    f_no = data.future[ID].astype(str).map(assign) if len(data.future) else None
    out: dict[int, SalesData] = {}
    for no, rows in data.history.groupby(h_no, sort=True).groups.items():
        future = data.future.iloc[:0]
        if f_no is not None:
            future = data.future[f_no.to_numpy() == no].reset_index(drop=True)
        history = data.history.loc[rows].reset_index(drop=True)
        out[int(no)] = replace(data, history=history, future=future)
    return out


def assemble_shard(
    pieces: list[SalesData], raw_last: pd.Timestamp | None, as_of: dt.date | None
) -> SalesData:
    """A shard from its pieces of every partition: history rows together, sorted by
    ``unique_id``, ``ds``; the future after the panel's last date (``raw_last``: each
    partition's own future starts after its own last date; None: pieces already cut, every
    future row kept), each (series, date) once; then cut at ``as_of`` as
    :meth:`SalesData.as_of` cuts the whole panel."""
    if not pieces:
        raise ValueError("a shard needs at least one piece")
    history = _sorted([p.history for p in pieces])
    future = _sorted([p.future for p in pieces])
    if raw_last is not None:
        future = future[future[DATE] > raw_last]
    if len(pieces) > 1:  # a future file's rows of a series come with each of its partitions
        future = future.drop_duplicates([ID, DATE], keep="first")
    future = future.reset_index(drop=True)
    return replace(pieces[0], history=history, future=future).as_of(as_of)


def _sorted(frames: list[pd.DataFrame]) -> pd.DataFrame:
    full = [f for f in frames if len(f)] or frames[:1]
    out = pd.concat(full, ignore_index=True) if len(full) > 1 else full[0]
    return out.sort_values([ID, DATE], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class ShardCheck:
    """One shard's validation report, and of its series kept (short ones dropped): the
    fingerprint, the first date and the holiday flags (:class:`HolidayPartial`)."""

    report: ValidationReport
    fingerprint: PrintParts | None
    first: pd.Timestamp | None
    holidays: HolidayPartial | None


def check_shard(
    data: SalesData,
    cfg: ValidationSection,
    as_of: dt.date | None,
    horizon: int,
    origin: pd.Timestamp,
) -> ShardCheck:
    """Validate a shard (:func:`validate_sales`); when it passed, what the plan needs of
    its series kept."""
    report = validate_sales(data, cfg, as_of, horizon)
    # A share checked with ``mostly`` may fail in one shard and pass over the panel.
    if any(c.mostly is None for c in report.failed):
        return ShardCheck(report, None, None, None)
    kept = drop_short_series(data, report)
    if kept.history.empty:
        return ShardCheck(report, None, None, None)
    first = pd.Timestamp(kept.history[DATE].min())
    return ShardCheck(report, print_parts(kept), first, holiday_partial(kept, origin, horizon))


def scoring_plan(plan: ShufflePlan, checks: list[ShardCheck], horizon: int) -> ScoringPlan:
    """The sharded scoring's plan from the passed shard checks (shards without series
    left are dropped). Its fingerprint adds up the shards' print parts: the local
    engine's print of the same rows."""
    kept = [(n, c) for n, c in zip(plan.names, checks, strict=True) if c.holidays is not None]
    if not kept:
        raise SourceError("no series left to forecast after dropping the short ones")
    firsts = [c.first for _, c in kept if c.first is not None]
    return ScoringPlan(
        origin=plan.origin,
        started_at=plan.started_at,
        data_fingerprint=combine_prints([c.fingerprint for _, c in kept if c.fingerprint]),
        holidays=combine_holidays(
            [c.holidays for _, c in kept if c.holidays is not None],
            plan.origin,
            horizon,
            plan.freq,
        ),
        start=min(firsts),
        shards=[],
        names=[n for n, _ in kept],
    )
