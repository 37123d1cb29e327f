"""Rolling-origin backtest of the forecaster against seasonal-naive and naive baselines.

For each origin ``T`` the model is fitted on data before ``T`` only and scored on the
actuals of ``T .. T + horizon - 1``; the baselines are computed from the same history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.build import Grid, make_grid, period_step
from salesflow.metrics import score_by
from salesflow.model import GlobalForecaster
from salesflow.schema import DATE, ID, SalesData

PREDICTIONS = ("forecast", "seasonal_naive", "naive")


def baseline_forecasts(grid: Grid, t: int, horizon: int, season: int) -> pd.DataFrame:
    """Baselines from data before index ``t``.

    Columns out: unique_id, ds, horizon, naive (last observed value), seasonal_naive (same
    period one season earlier, the naive value where that is unknown). Series without any
    observation before ``t`` are left out.
    """
    y = grid.y[:, :t]
    seen = ~np.isnan(y)
    has = seen.any(axis=1)
    last_pos = np.where(has, t - 1 - np.argmax(seen[:, ::-1], axis=1), 0)
    naive = np.where(has, y[np.arange(len(y)), last_pos], np.nan)
    hs = np.arange(1, horizon + 1)
    src = t + hs - 1 - season
    seas = np.full((len(y), horizon), np.nan)
    ok = (src >= 0) & (src < t)
    seas[:, ok] = y[:, src[ok]]
    seas = np.where(np.isnan(seas), naive[:, None], seas)
    step = period_step(grid.freq)
    dates = pd.DatetimeIndex([grid.dates[0] + step * (t + h - 1) for h in hs])
    keep = np.flatnonzero(has)
    return pd.DataFrame(
        {
            ID: np.repeat(grid.ids[keep], horizon),
            DATE: np.tile(dates.to_numpy(), len(keep)),
            "horizon": np.tile(hs, len(keep)),
            "naive": np.repeat(naive[keep], horizon),
            "seasonal_naive": seas[keep].ravel(),
        }
    )


@dataclass
class BacktestResult:
    """``frame``: one row per (origin, series, target date) with an actual: unique_id,
    origin, ds, horizon, y, is_holiday, scale, forecast, seasonal_naive, naive."""

    frame: pd.DataFrame
    holiday_weight: float

    @property
    def origins(self) -> list[str]:
        """The backtest origins as ISO dates, oldest first."""
        return [str(pd.Timestamp(o).date()) for o in sorted(self.frame["origin"].unique())]

    def overall(self) -> pd.DataFrame:
        """One row per model: wmae, mae, rmse, bias, n, and wmae ratio to seasonal naive."""
        f = self.frame.assign(_all="all")
        out = score_by(f, "_all", list(PREDICTIONS), self.holiday_weight).drop(columns="_all")
        base = float(out.loc[out.model == "seasonal_naive", "wmae"].iloc[0])
        out["wmae_vs_seasonal_naive"] = out["wmae"] / base if base > 0 else np.nan
        return out.set_index("model")

    def by(self, key: str | list[str]) -> pd.DataFrame:
        """Metrics per group (e.g. ``"horizon"``, ``"origin"``, ``"unique_id"``)."""
        return score_by(self.frame, key, list(PREDICTIONS), self.holiday_weight)

    def metrics(self) -> dict[str, float]:
        """Flat dict for MLflow: ``<model>_<metric>`` plus the ratio to seasonal naive."""
        ov = self.overall()
        out = {f"{m}_{k}": float(ov.loc[m, k]) for m in ov.index for k in ov.columns}
        return {k.replace("forecast_", "model_"): v for k, v in out.items()}


def rolling_origins(grid: Grid, horizon: int, n_origins: int, step: int, min_history: int):
    """Origin indices: the last one leaves exactly ``horizon`` periods of actuals."""
    last = len(grid.dates) - horizon
    origins = [last - k * step for k in reversed(range(n_origins))]
    if origins[0] <= min_history:
        raise ValueError(
            f"data too short for the backtest: {len(grid.dates)} periods cannot hold "
            f"{n_origins} origins {step} apart with horizon {horizon} after {min_history} "
            "periods of training history; lower backtest.n_origins / backtest.step or "
            "model.horizon"
        )
    return origins


def run_backtest(
    data: SalesData,
    make_model: Callable[[], GlobalForecaster],
    n_origins: int,
    step: int,
    holiday_weight: float = 5.0,
    origins: list[pd.Timestamp] | None = None,
    on_origin: Callable[[pd.Timestamp, GlobalForecaster], None] | None = None,
    with_baseline: bool = False,
) -> BacktestResult:
    """Fit a fresh model per origin on data before it; score model and baselines after it.
    ``with_baseline``: the frame also carries the model's own ``baseline`` (see
    :meth:`GlobalForecaster.predict`)."""
    proto = make_model()
    grid = make_grid(data.history, None, data.covariates, data.freq)
    idx = (
        [grid.index_of(o) for o in origins]
        if origins
        else rolling_origins(grid, proto.horizon, n_origins, step, proto.min_train_history)
    )
    parts = []
    for t in idx:
        origin = grid.dates[t]
        model = make_model().fit(data.as_of(origin - period_step(data.freq)))
        pred = model.predict(data, origin=origin, with_baseline=with_baseline)
        base = baseline_forecasts(grid, t, model.horizon, model.spec.season_length)
        rows = pred.merge(base, on=[ID, DATE, "horizon"], how="inner")
        parts.append(rows)
        if on_origin:
            on_origin(origin, model)
    frame = pd.concat(parts, ignore_index=True)
    actual = data.history[[ID, DATE, "y", "is_holiday"]]
    frame = frame.merge(actual, on=[ID, DATE], how="inner")
    frame["is_holiday"] = frame["is_holiday"].astype(bool)
    return BacktestResult(frame, holiday_weight)
