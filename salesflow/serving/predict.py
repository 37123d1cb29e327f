"""On-demand forecasts from the champion for named series, with what-if overrides.

:func:`predict_series` answers ``POST /predict``: the champion's forecasts for some series
from their latest history, exactly those the batch forecast (:func:`score_series`) makes
for them at the same origin. The model reads other series too: the mean of each feature
over the series sharing a key value (the store's departments, the department's stores) and
last season denoised over the department's stores. So the history scored is the requested
series plus those sharing a key value with them (:func:`peer_series`), and nothing else.
Without overrides at the default origin, the answer is cut from the whole panel's
forecast, made once per (model, data) and kept (:func:`warm_predictions`).

Overrides (:class:`Override`) replace or scale a covariate of the forecast window (the
filled future covariates the model reads, :func:`fill_future_covariates`); the history is
never changed. A request that names an unknown series, covariate, date or horizon fails
with :class:`PredictInputError` naming it. The batch CSV path is
:mod:`salesflow.serving.predict_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from features.build import period_step
from salesflow.data.schema import DATE, ID, SalesData
from salesflow.errors import UserError
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.scoring import fill_future_covariates, score_series
from salesflow.serving.predict_inputs import (
    SHOWN,
    Override,
    OverrideTarget,
    PerObject,
    PredictInputError,
    RowError,
    TooManySeries,
    apply_overrides,
    history_start,
    peer_series,
    resolve_override,
    resolve_series,
    rows_of,
    series_index,
    subset,
)

__all__ = [
    "BOUNDS",
    "Override",
    "PredictInputError",
    "PredictResult",
    "RowError",
    "TooManySeries",
    "forecast_dates",
    "forecast_origin",
    "peer_series",
    "predict_series",
    "resolve_series",
    "warm_predictions",
]

BOUNDS = ("lo_80", "hi_80", "lo_95", "hi_95")


@dataclass
class PredictResult:
    """``frame``: unique_id, the key columns, ds, horizon, forecast, lo_80, hi_80, lo_95,
    hi_95 (NaN bounds for a model without intervals), by requested series then horizon.
    ``overridden``: one dict per changed input (series, covariate, date, before, after).
    ``notes``: ``path`` — ``cached`` (cut from the whole panel's forecast) or ``peers``
    (forecast with the series' peers for this request)."""

    frame: pd.DataFrame
    overridden: list[dict[str, Any]]
    errors: list[RowError]
    origin: pd.Timestamp
    notes: dict[str, Any] = field(default_factory=dict)


_BASELINE = PerObject(2)
_FILLED = PerObject(2)


# --- origin and window ---------------------------------------------------------------------


def forecast_origin(model: GlobalForecaster, data: SalesData, origin: Any) -> pd.Timestamp:
    """The forecast origin: the period after the last observation by default; a given one
    must be a period date after the first observation and not after that default."""
    index = series_index(data)
    latest = index.last + period_step(data.freq)  # model.next_origin, without a scan
    if origin is None:
        return latest
    try:
        ts = pd.Timestamp(origin)
    except (TypeError, ValueError):
        raise PredictInputError(f"origin {origin!r} is not a date: use YYYY-MM-DD") from None
    first = index.first
    step = period_step(data.freq)
    if ts <= first or ts > latest or (ts - first) % step != pd.Timedelta(0):
        raise PredictInputError(
            f"origin {ts.date()} is not a forecast origin of the data: use a {data.freq} "
            f"period date after {first.date()} and at most {latest.date()} (the default)"
        )
    return ts


def forecast_dates(model: GlobalForecaster, data: SalesData, origin: Any = None) -> pd.Index:
    """The target dates of the forecast window (horizon 1 first)."""
    start = forecast_origin(model, data, origin)
    step = period_step(data.freq)
    return pd.DatetimeIndex([start + step * h for h in range(model.horizon)])


def warm_predictions(model: GlobalForecaster, data: SalesData) -> pd.DataFrame | None:
    """The whole panel's forecasts at the default origin (the batch forecast's), made once
    per (model, data) and kept: requests without overrides are cut from them. None when
    the whole panel cannot be forecast (a known-ahead value missing for some series):
    requests then forecast their own series. Also readies the inputs of what-if requests
    at that origin (:func:`_filled_inputs`). Thread-safe; slow the first time (the batch
    forecast's time), so the API calls it off the request path."""

    def make() -> pd.DataFrame | None:
        if _filled_inputs(model, data) is None:
            return None
        return score_series(model, data)[0]

    return _BASELINE.get((model, data), make)


def _filled_inputs(model: GlobalForecaster, data: SalesData) -> SalesData | None:
    """The whole panel cut before the default origin, its future covariates filled for the
    forecast window as the batch forecast fills them; kept per (model, data). None when
    the panel cannot be filled (a known-ahead value missing for some series): requests
    then fill their own series and say so if theirs are the ones missing."""

    def make() -> SalesData | None:
        origin = forecast_origin(model, data, None)
        try:
            known = data.as_of(origin - period_step(data.freq))
            return fill_future_covariates(known, origin, model.horizon)[0]
        except UserError:
            return None

    return _FILLED.get((model, data), make)


def _predict_with(
    model: GlobalForecaster,
    data: SalesData,
    ids: list[str],
    targets: list[OverrideTarget],
    origin: pd.Timestamp,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The forecasts of ``ids`` from their history and their peers' (see
    :func:`peer_series`), the future covariates filled as the batch forecast fills them
    and then overridden. Filling is per series, so at the default origin the peers' rows
    are cut from the whole panel filled once."""
    peers = peer_series(data, ids)
    filled = _filled_inputs(model, data) if origin == forecast_origin(model, data, None) else None
    if filled is not None:
        known = subset(filled, peers)
    else:
        known = subset(data, peers).as_of(origin - period_step(data.freq))
        known = fill_future_covariates(known, origin, model.horizon)[0]
    future, records = apply_overrides(known.future, targets, series_index(data).keys)
    pred = model.predict(replace(known, future=future), origin=origin)
    return pred[pred[ID].isin(set(ids))], records


def predict_series(
    model: GlobalForecaster,
    data: SalesData,
    series: list[dict[str, str]],
    overrides: list[Override] | tuple[Override, ...] = (),
    origin: Any = None,
) -> PredictResult:
    """Forecasts of ``series`` (key column -> value) for horizons 1..model.horizon from
    ``origin`` (default: the period after the data's last observation), the same the batch
    forecast makes for them; ``overrides`` change covariates of the forecast window.
    Columns of ``frame``: see :class:`PredictResult`. :class:`PredictInputError` names an
    unknown series, key, covariate, date, horizon or origin, or a series with no history
    before the origin."""
    ids = resolve_series(data, series)
    start = forecast_origin(model, data, origin)
    starts = history_start(data)
    _require_history([i for i in ids if starts[i] >= start], start)
    window = forecast_dates(model, data, start)
    targets = [resolve_override(o, ids, data, model, window) for o in overrides]
    full = None
    if not targets and start == forecast_origin(model, data, None):
        full = warm_predictions(model, data)
    if full is not None:
        pred, records = rows_of(full, ids), list[dict[str, Any]]()
    else:
        try:
            pred, records = _predict_with(model, data, ids, targets, start)
        except UserError as exc:  # e.g. a known-ahead covariate missing in the window
            raise PredictInputError(str(exc)) from None
    _require_history([i for i in ids if i not in set(pred[ID])], start)
    notes = {"path": "cached" if full is not None else "peers", "series": len(ids)}
    return PredictResult(_shape(pred, ids, data.keys), records, [], start, notes)


def _require_history(missing: list[str], start: pd.Timestamp) -> None:
    if missing:
        shown = ", ".join(missing[:SHOWN]) + (" .." if len(missing) > SHOWN else "")
        raise PredictInputError(
            f"{len(missing)} series have no observation before the origin {start.date()} "
            f"and cannot be forecast: {shown}"
        )


def _shape(pred: pd.DataFrame, ids: list[str], keys: list[str]) -> pd.DataFrame:
    """unique_id, keys, ds, horizon, forecast and bounds, by requested series then horizon
    (NaN bounds for a model without intervals)."""
    order = pd.Series(range(len(ids)), index=ids).reindex(pred[ID]).to_numpy()
    rows = np.lexsort((pred["horizon"].to_numpy(), order))
    cols = [ID, *keys, DATE, "horizon", "forecast", *BOUNDS]
    return pred.iloc[rows].reindex(columns=cols).reset_index(drop=True)
