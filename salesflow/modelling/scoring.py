"""Batch scoring: the champion's forecasts for every series, shaped for the warehouse."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.build import period_step
from salesflow.data.canonical import SourceError
from salesflow.data.schema import DATE, ID, SalesData
from salesflow.modelling.model import GlobalForecaster
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


class KnownAheadMissing(SourceError):
    """A known-ahead covariate has no value for some target dates: it is never guessed."""


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
    n_series, days = fut.loc[rows, ID].nunique(), pd.DatetimeIndex(fut.loc[rows, DATE].unique())
    days = days.sort_values()
    shown = ", ".join(f"{d:%Y-%m-%d}" for d in days[:3])
    if len(days) > 3:
        shown += f" .. {days[-1]:%Y-%m-%d}"
    names = ", ".join(repr(c) for c in cols)
    what = f"covariate {names} is" if len(cols) == 1 else f"covariates {names} are"
    dates = f"target date{'s' if len(days) > 1 else ''}"
    raise KnownAheadMissing(
        f"known-ahead {what} missing for {n_series:,} series on {len(days):,} {dates} "
        f"({shown}): supply them in the future file (data.long.future_path) or remove "
        f"{'it' if len(cols) == 1 else 'them'} from data.long.known_ahead to carry the last "
        "value forward"
    )


def score_series(
    model: GlobalForecaster, data: SalesData, origin: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, ScoringNotes]:
    """Forecast every series with history before ``origin`` (default: the period after the
    last observation). Columns out: those of :meth:`GlobalForecaster.predict`."""
    started = dt.datetime.now(dt.UTC)
    origin = pd.Timestamp(origin) if origin is not None else model.next_origin(data)
    known = data.as_of(origin - period_step(data.freq))
    known, n_filled, cols = fill_future_covariates(known, origin, model.horizon)
    pred = model.predict(known, origin=origin)
    all_ids = set(data.history[ID].unique())
    forecast_ids = set(pred[ID].unique())
    trained = set(getattr(model, "train_series_", []) or [])
    notes = ScoringNotes(
        origin=origin,
        n_series_forecast=len(forecast_ids),
        skipped_no_history=sorted(all_ids - forecast_ids),
        unseen_series=sorted(forecast_ids - trained) if trained else [],
        covariate_rows_filled=n_filled,
        covariate_columns_filled=cols,
        data_fingerprint=data_fingerprint(data),
        started_at=started,
    )
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
