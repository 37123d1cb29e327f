"""Challenger vs champion on the same recent holdout: plain functions, no Prefect.

The holdout is the last ``policy.holdout_periods`` periods of the data. The challenger is
trained on the data before it; both models forecast the holdout from its first period with
features from data before it only, and seasonal naive is computed from the same history,
so the two scorecards are comparable row for row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.build import make_grid, period_step
from salesflow.data.schema import DATE, ID, SalesData
from salesflow.governance.policy import Scorecard
from salesflow.modelling.backtest import baseline_forecasts, fit_with, forecast_with
from salesflow.modelling.metrics import bias, wmae
from salesflow.modelling.model import GlobalForecaster


@dataclass(frozen=True)
class Holdout:
    """``train``: the data before the holdout; ``origin``: its first period."""

    train: SalesData
    origin: pd.Timestamp
    periods: int


def split_holdout(data: SalesData, periods: int) -> Holdout:
    """Cut the last ``periods`` periods off ``data`` for a fair comparison."""
    step = period_step(data.freq)
    origin = data.last_date - step * (periods - 1)
    if origin <= data.history[DATE].min() + step * 52:
        raise ValueError(
            f"a holdout of {periods} periods leaves too little history before "
            f"{origin.date()}; lower policy.holdout_periods"
        )
    return Holdout(data.as_of(origin - step), origin, periods)


def comparable_champion(
    champion: GlobalForecaster,
    holdout: Holdout,
    fit: Callable[[GlobalForecaster, SalesData], GlobalForecaster] | None = None,
) -> tuple[GlobalForecaster, str | None]:
    """The champion as it can fairly be scored on the holdout.

    A champion trained on data that reaches into the holdout has seen its answers; it is
    then scored by a refit of its own configuration on the data before the holdout, and the
    returned note says so (``fit``: how that refit is fitted, e.g. on Dask). Otherwise it
    is scored as it is (note None).
    """
    if champion.trained_until_ < holdout.origin:
        return champion, None
    refit = fit_with(champion.clone(), holdout.train, fit)
    note = (
        f"the champion was trained until {champion.trained_until_.date()}, inside the "
        f"holdout (from {holdout.origin.date()}): it is scored by a refit of its "
        "configuration on the data before the holdout"
    )
    return refit, note


def holdout_frame(
    model: GlobalForecaster,
    data: SalesData,
    holdout: Holdout,
    predict: Callable[..., pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Forecasts of ``model`` for the holdout with actuals and seasonal naive.

    Columns out: unique_id, ds, horizon, forecast, seasonal_naive, y, is_holiday. Only the
    first ``holdout.periods`` horizons, and only rows with an actual on a day the store was
    open (a closed day's forecast is 0 by rule: scoring it would flatter every model).
    ``predict``: how the forecasts are made (``predict(model, data, origin)``; default
    ``model.predict``).
    """
    pred = forecast_with(model, data, holdout.origin, predict)
    pred = pred[pred["horizon"] <= holdout.periods]
    if "closed" in pred:
        pred = pred[~pred["closed"].astype(bool)]
    grid = make_grid(data.history, None, [], data.freq)  # the baselines read only the target
    base = baseline_forecasts(
        grid, grid.index_of(holdout.origin), holdout.periods, model.spec.season_length
    )
    rows = pred[[ID, DATE, "horizon", "forecast"]].merge(
        base[[ID, DATE, "seasonal_naive"]], on=[ID, DATE], how="inner"
    )
    actual = data.history[[ID, DATE, "y", "is_holiday"]]
    return rows.merge(actual, on=[ID, DATE], how="inner")


def scorecard(
    frame: pd.DataFrame, version: str, holiday_weight: float, common: pd.Index | None = None
) -> Scorecard:
    """A model's figures on holdout rows (restricted to the ``common`` row keys if given)."""
    if common is not None:
        frame = frame.set_index([ID, DATE]).loc[common].reset_index()
    y, hol = frame["y"].to_numpy(), frame["is_holiday"].to_numpy()
    return Scorecard(
        version=str(version),
        wmae=wmae(y, frame["forecast"], hol, holiday_weight),
        seasonal_naive_wmae=wmae(y, frame["seasonal_naive"], hol, holiday_weight),
        bias=bias(y, frame["forecast"]),
        mean_abs_actual=float(np.mean(np.abs(y))),
        n=len(frame),
    )


def compare_on_holdout(
    challenger: pd.DataFrame,
    champion: pd.DataFrame | None,
    challenger_version: str,
    champion_version: str | None,
    holiday_weight: float,
) -> tuple[Scorecard, Scorecard | None]:
    """Scorecards of both models on the rows both forecast (the same series and dates)."""
    if champion is None:
        return scorecard(challenger, challenger_version, holiday_weight), None
    common = pd.MultiIndex.from_frame(challenger[[ID, DATE]]).intersection(
        pd.MultiIndex.from_frame(champion[[ID, DATE]])
    )
    return (
        scorecard(challenger, challenger_version, holiday_weight, common),
        scorecard(champion, str(champion_version), holiday_weight, common),
    )


def backtest_scorecard(frame: pd.DataFrame, version: str, holiday_weight: float) -> Scorecard:
    """A model's figures on its own backtest rows (``BacktestResult.frame``: y, is_holiday,
    forecast, seasonal_naive): what the first champion is judged on."""
    return scorecard(frame, version, holiday_weight)
