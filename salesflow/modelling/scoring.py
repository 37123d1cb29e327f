"""Batch scoring: the champion's forecasts for every series, shaped for the warehouse.

:func:`score_series` scores the whole panel in this process. The same steps split by
shards of series (Dask, :mod:`salesflow.compute.shards`): :func:`plan_scoring` (the flow's
process), :func:`shard_features` per shard (features stay where they were computed),
:func:`reduce_shards` (group means and merged notes from each shard's small summary),
:func:`forecast_shard` per shard. :func:`score_series` is the one-shard case of the same
functions, so sharded and local forecasts are equal.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from features.build import period_step
from salesflow.compute.shards import series_shards, shard_data, shard_name
from salesflow.data.canonical import SourceError
from salesflow.data.schema import DATE, ID, SalesData
from salesflow.modelling.groups import GroupSums, combine_group_sums, group_means_from
from salesflow.modelling.holidays import panel_holidays
from salesflow.modelling.model import GlobalForecaster, PredictFeatures
from salesflow.modelling.registry import data_fingerprint


@dataclass(frozen=True)
class ScoringNotes:
    """What the batch forecast had to work around, for the run's artifact and logs."""

    origin: pd.Timestamp
    n_series_forecast: int
    skipped_no_history: list[str]
    unseen_series: list[str]
    covariate_rows_filled: int
    covariate_columns_filled: list[str]
    data_fingerprint: str | None = None  # of the history scored (see registry.data_fingerprint)
    started_at: dt.datetime | None = None  # when scoring began (UTC)
    # categorical covariate -> values not seen in training (treated as missing)
    unknown_categories: dict[str, list[str]] = field(default_factory=dict)
    n_shards: int = 1


@dataclass(frozen=True)
class KnownAheadGaps:
    """Known-ahead columns without a value: which, for how many series, on which dates."""

    columns: list[str]
    n_series: int
    dates: list[pd.Timestamp]


class KnownAheadMissing(SourceError):
    """A known-ahead covariate has no value for some target dates: it is never guessed."""

    gaps: KnownAheadGaps | None = None


def fill_future_covariates(
    data: SalesData, origin: pd.Timestamp, horizon: int
) -> tuple[SalesData, int, list[str]]:
    """Make sure every series has covariates for all target dates.

    Columns of ``data.known_ahead`` must be in ``data.future`` for every series and target
    date (origin .. origin + horizon - 1): :class:`KnownAheadMissing` otherwise. Any other
    missing covariate or categorical value of a target date is filled with the series'
    last known value before the origin (documented fallback). Returns the data, the number
    of target rows that needed a fill, and the columns that were filled.
    """
    varying = [*data.covariates, *data.categorical]
    if not varying:
        return data, 0, []
    step = period_step(data.freq)
    dates = pd.DatetimeIndex([origin + step * h for h in range(horizon)])
    ids = data.history[ID].unique()
    grid = pd.MultiIndex.from_product([ids, dates], names=[ID, DATE]).to_frame(index=False)
    fut = grid.merge(data.future, on=[ID, DATE], how="left")
    missing = fut[varying].isna()
    check_known_ahead(fut, missing, data.known_ahead)
    last = data.history[data.history[DATE] < origin].sort_values(DATE).groupby(ID)[varying].last()
    filled_cols = [c for c in varying if missing[c].any()]
    for c in filled_cols:
        fut[c] = fut[c].fillna(fut[ID].map(last[c]))
    static = data.static_frame()
    fut = fut.drop(columns=[c for c in static.columns if c != ID and c in fut.columns])
    fut = fut.merge(static, on=ID, how="left")
    if "is_holiday" not in fut or fut["is_holiday"].isna().any():
        from features.calendar import is_holiday_period

        cal = is_holiday_period(fut[DATE], data.freq)
        known = fut["is_holiday"].astype("boolean")  # object -> nullable bool: no downcast warning
        fut["is_holiday"] = known.fillna(pd.Series(cal, index=fut.index)).astype(bool)
    columns = [c for c in data.history.columns if c != "y"]
    future = fut[columns].reset_index(drop=True)
    return replace(data, future=future), int(missing.any(axis=1).sum()), filled_cols


def check_known_ahead(fut: pd.DataFrame, missing: pd.DataFrame, known_ahead: list[str]) -> None:
    """:class:`KnownAheadMissing` naming the known-ahead columns without a value on some
    rows of ``fut`` (``unique_id``, ``ds``), how many series and dates, and the dates."""
    cols = [c for c in known_ahead if c in missing and missing[c].any()]
    if not cols:
        return
    rows = missing[cols].any(axis=1)
    days = pd.DatetimeIndex(fut.loc[rows, DATE].unique()).sort_values()
    raise known_ahead_error(KnownAheadGaps(cols, int(fut.loc[rows, ID].nunique()), list(days)))


def merge_gaps(parts: list[KnownAheadGaps | None]) -> KnownAheadGaps | None:
    """The gaps of several shards (disjoint series) as one: columns and dates united."""
    found = [g for g in parts if g is not None]
    if not found:
        return None
    cols = list(dict.fromkeys(c for g in found for c in g.columns))
    days = sorted({d for g in found for d in g.dates})
    return KnownAheadGaps(cols, sum(g.n_series for g in found), days)


def known_ahead_error(gaps: KnownAheadGaps) -> KnownAheadMissing:
    """The one-line error naming the columns, the series count and the dates of ``gaps``."""
    cols, n_series, days = gaps.columns, gaps.n_series, pd.DatetimeIndex(gaps.dates)
    shown = ", ".join(f"{d:%Y-%m-%d}" for d in days[:3])
    if len(days) > 3:
        shown += f" .. {days[-1]:%Y-%m-%d}"
    names = ", ".join(repr(c) for c in cols)
    what = f"covariate {names} is" if len(cols) == 1 else f"covariates {names} are"
    dates = f"target date{'s' if len(days) > 1 else ''}"
    exc = KnownAheadMissing(
        f"known-ahead {what} missing for {n_series:,} series on {len(days):,} {dates} "
        f"({shown}): supply them in the future file (data.long.future_path) or remove "
        f"{'it' if len(cols) == 1 else 'them'} from data.long.known_ahead to carry the last "
        "value forward"
    )
    exc.gaps = gaps
    return exc


def score_series(
    model: GlobalForecaster, data: SalesData, origin: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, ScoringNotes]:
    """Forecast every series with history before ``origin`` (default: the period after the
    last observation). Columns out: those of :meth:`GlobalForecaster.predict`. The
    one-shard case of :func:`shard_features` -> :func:`reduce_shards` ->
    :func:`forecast_shard`."""
    started = dt.datetime.now(dt.UTC)
    origin = pd.Timestamp(origin) if origin is not None else model.next_origin(data)
    part = shard_features(model, data, origin)
    means, notes = reduce_shards([part.summary], origin, data_fingerprint(data), started)
    return forecast_shard(model, part, means), notes


@dataclass(frozen=True)
class ShardSummary:
    """What the reduce step needs of one shard (small): its partial group sums and notes."""

    sums: GroupSums
    n_series_forecast: int
    skipped_no_history: list[str]
    unseen_series: list[str]
    covariate_rows_filled: int
    covariate_columns_filled: list[str]
    unknown_categories: dict[str, list[str]]
    gaps: KnownAheadGaps | None = None
    varying: list[str] = field(default_factory=list)  # the fill's column order


@dataclass
class ShardPart:
    """One shard after :func:`shard_features`: its features (None when known-ahead values
    are missing), its data after the covariate fill, and its :class:`ShardSummary`."""

    features: PredictFeatures | None
    data: SalesData
    summary: ShardSummary


@dataclass(frozen=True)
class ScoringPlan:
    """What the flow's process hands to the shards: the origin, the whole panel's holiday
    flags and fingerprint, when scoring began, and each shard's data and name."""

    origin: pd.Timestamp
    started_at: dt.datetime
    data_fingerprint: str
    holidays: pd.Series
    start: pd.Timestamp  # the panel's first date: every shard's grid starts there
    shards: list[SalesData]
    names: list[str]


def plan_scoring(
    model: GlobalForecaster, data: SalesData, shard_series: int, origin: pd.Timestamp | None
) -> ScoringPlan:
    """Split ``data`` into shards of about ``shard_series`` series (whole groups of the last
    key: :func:`salesflow.compute.shards.series_shards`), with what every shard must share."""
    started = dt.datetime.now(dt.UTC)
    origin = pd.Timestamp(origin) if origin is not None else model.next_origin(data)
    ids = series_shards(data, model, shard_series)
    return ScoringPlan(
        origin=origin,
        started_at=started,
        data_fingerprint=data_fingerprint(data),
        holidays=panel_holidays(data, origin, model.horizon),
        start=pd.Timestamp(data.history[DATE].min()),
        shards=[shard_data(data, part) for part in ids],
        names=[shard_name(i, part) for i, part in enumerate(ids)],
    )


def shard_features(
    model: GlobalForecaster,
    data: SalesData,
    origin: pd.Timestamp,
    holidays: pd.Series | None = None,
    start: pd.Timestamp | None = None,
) -> ShardPart:
    """The first half of scoring for ``data``'s series (a shard or the whole panel): the
    covariate fill, origin features and partial group sums. Missing known-ahead values are
    recorded in the summary (no features): :func:`reduce_shards` raises for every shard."""
    known = data.as_of(origin - period_step(data.freq))
    varying = [*data.covariates, *data.categorical]
    try:
        known, n_filled, cols = fill_future_covariates(known, origin, model.horizon)
    except KnownAheadMissing as exc:
        if exc.gaps is None:
            raise
        return ShardPart(None, known, ShardSummary({}, 0, [], [], 0, [], {}, exc.gaps, varying))
    pf = model.predict_features(known, origin, holidays, start)
    forecast_ids = set(pf.feats[ID].unique())
    trained = set(getattr(model, "train_series_", []) or [])
    summary = ShardSummary(
        sums=pf.sums,
        n_series_forecast=len(forecast_ids),
        skipped_no_history=sorted(set(data.history[ID].unique()) - forecast_ids),
        unseen_series=sorted(forecast_ids - trained) if trained else [],
        covariate_rows_filled=n_filled,
        covariate_columns_filled=cols,
        unknown_categories=pf.unknown_categories,
        varying=varying,
    )
    return ShardPart(pf, known, summary)


def reduce_shards(
    summaries: list[ShardSummary],
    origin: pd.Timestamp,
    fingerprint: str | None,
    started: dt.datetime | None,
) -> tuple[dict[str, pd.DataFrame], ScoringNotes]:
    """The group means over every shard and the run's notes (counts added, lists united);
    :class:`KnownAheadMissing` naming every shard's missing columns, series and dates."""
    gaps = merge_gaps([s.gaps for s in summaries])
    if gaps is not None:
        raise known_ahead_error(gaps)
    means = group_means_from(combine_group_sums(s.sums for s in summaries))
    unknown: dict[str, list[str]] = {}
    for s in summaries:
        for c, values in s.unknown_categories.items():
            unknown[c] = sorted({*unknown.get(c, []), *values})
    filled = {c for s in summaries for c in s.covariate_columns_filled}
    order = list(dict.fromkeys([*(summaries[0].varying if summaries else []), *sorted(filled)]))
    notes = ScoringNotes(
        origin=origin,
        n_series_forecast=sum(s.n_series_forecast for s in summaries),
        skipped_no_history=sorted(i for s in summaries for i in s.skipped_no_history),
        unseen_series=sorted(i for s in summaries for i in s.unseen_series),
        covariate_rows_filled=sum(s.covariate_rows_filled for s in summaries),
        # in the order of the data's columns, as one fill of the whole panel lists them
        covariate_columns_filled=[c for c in order if c in filled],
        data_fingerprint=fingerprint,
        started_at=started,
        unknown_categories=unknown,
        n_shards=len(summaries),
    )
    return means, notes


def forecast_shard(
    model: GlobalForecaster, part: ShardPart, means: dict[str, pd.DataFrame] | None = None
) -> pd.DataFrame:
    """The second half: the forecasts of ``part``'s series with the group means over every
    shard (None: of this shard alone, e.g. data without group features). Columns out:
    those of :meth:`GlobalForecaster.predict`."""
    if part.features is None:
        raise ValueError("this shard has no features: reduce_shards raises for it first")
    if means is None:
        means = group_means_from(part.summary.sums)
    return model.finish_predict(part.features, part.data, means)


def score_in_shards(
    model: GlobalForecaster,
    data: SalesData,
    shard_series: int,
    origin: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, ScoringNotes]:
    """What the Dask flow does, in this process: plan, features per shard, reduce,
    forecasts per shard; rows in shard order."""
    plan = plan_scoring(model, data, shard_series, origin)
    parts = [shard_features(model, d, plan.origin, plan.holidays, plan.start) for d in plan.shards]
    means, notes = reduce_shards(
        [p.summary for p in parts], plan.origin, plan.data_fingerprint, plan.started_at
    )
    pred = pd.concat([forecast_shard(model, p, means) for p in parts], ignore_index=True)
    return pred, notes


def warehouse_rows(
    pred: pd.DataFrame,
    keys: list[str],
    model_name: str,
    model_version: str,
    run_id: str,
    flow_run_id: str | None,
) -> pd.DataFrame:
    """Shape predictions (unique_id, keys, origin, ds, horizon, forecast, lo_/hi_ bounds)
    into the warehouse's forecast rows, each carrying the model version that made it."""
    out = pd.DataFrame(
        {
            "unique_id": pred[ID].astype(str),
            "series_keys": [
                json.dumps({k: _plain(v) for k, v in zip(keys, row, strict=True)})
                for row in pred[keys].itertuples(index=False, name=None)
            ],
            "forecast_origin": pd.to_datetime(pred["origin"]).dt.date,
            "target_date": pd.to_datetime(pred[DATE]).dt.date,
            "horizon": pred["horizon"].astype(int),
            "forecast": pred["forecast"].astype(float),
        }
    )
    for k in ("store", "dept"):
        out[k] = pred[k].astype(str) if k in keys else None
    for b in ("lo_80", "hi_80", "lo_95", "hi_95"):
        out[b] = pred[b].astype(float) if b in pred else np.nan
    out["model_name"] = model_name
    out["model_version"] = str(model_version)
    out["mlflow_run_id"] = run_id
    out["flow_run_id"] = flow_run_id
    return out


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def rows_per_store(rows: pd.DataFrame) -> list[dict]:
    """For the run's artifact: rows written and series per store (or per first key)."""
    col = "store" if rows["store"].notna().any() else "unique_id"
    g = rows.groupby(col).agg(series=("unique_id", "nunique"), rows=("unique_id", "size"))
    return [{col: k, **{c: int(v) for c, v in r.items()}} for k, r in g.iterrows()]


def merge_rows_per_store(parts: list[list[dict]]) -> list[dict]:
    """:func:`rows_per_store` of several shards' rows as one (series and rows added per
    store; the shards hold different series), in the same order."""
    records = [r for part in parts for r in part]
    if not records:
        return []
    frame = pd.DataFrame(records)
    col = frame.columns[0]
    g = frame.groupby(col, sort=True)[["series", "rows"]].sum()
    return [{col: k, **{c: int(v) for c, v in r.items()}} for k, r in g.iterrows()]
