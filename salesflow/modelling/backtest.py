"""Rolling-origin backtest of the forecaster against seasonal-naive and naive baselines.

For each origin ``T`` the model is fitted on data before ``T`` only and scored on the
actuals of ``T .. T + horizon - 1``; the baselines are computed from the same history.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.build import Grid, make_grid, period_step
from salesflow.data.schema import DATE, ID, SalesData
from salesflow.modelling.metrics import score_by
from salesflow.modelling.model import GlobalForecaster

PREDICTIONS = ("forecast", "seasonal_naive", "naive")
"""The prediction columns every backtest frame has; daily data adds ``seasonal_naive_<k>``
(see :func:`prediction_columns`)."""

_WEEKLY_NAIVE = re.compile(r"seasonal_naive_\d+")


def prediction_columns(frame: pd.DataFrame) -> list[str]:
    """The prediction columns present in ``frame``: forecast, seasonal_naive, any
    ``seasonal_naive_<k>`` (same weekday one week back), naive, in that order."""
    extra = sorted(c for c in frame.columns if _WEEKLY_NAIVE.fullmatch(str(c)))
    order = ["forecast", "seasonal_naive", *extra, "naive"]
    return [c for c in order if c in frame.columns]


def _seasonal(y: np.ndarray, t: int, src: np.ndarray, naive: np.ndarray) -> np.ndarray:
    """Values at grid positions ``src`` (one per horizon) where known, else ``naive``."""
    out = np.full((len(y), len(src)), np.nan)
    ok = (src >= 0) & (src < t)
    out[:, ok] = y[:, src[ok]]
    return np.where(np.isnan(out), naive[:, None], out)


def baseline_forecasts(
    grid: Grid, t: int, horizon: int, season: int, weekly_season: int = 0
) -> pd.DataFrame:
    """Baselines from data before index ``t``.

    Columns out: unique_id, ds, horizon, naive (last observed value), seasonal_naive (same
    period one season earlier, the naive value where that is unknown). Series without any
    observation before ``t`` are left out. With ``weekly_season`` > 0 (daily data: 7) also
    ``seasonal_naive_<weekly_season>``: the value at the latest position ``j - k *
    weekly_season`` before ``t`` (same weekday of the last week before the origin), naive
    where unknown. A closed day in a source position gives its recorded value (0).
    """
    y = grid.y[:, :t]
    seen = ~np.isnan(y)
    has = seen.any(axis=1)
    last_pos = np.where(has, t - 1 - np.argmax(seen[:, ::-1], axis=1), 0)
    naive = np.where(has, y[np.arange(len(y)), last_pos], np.nan)
    hs = np.arange(1, horizon + 1)
    step = period_step(grid.freq)
    dates = pd.DatetimeIndex([grid.dates[0] + step * (t + h - 1) for h in hs])
    keep = np.flatnonzero(has)
    out = {
        ID: np.repeat(grid.ids[keep], horizon),
        DATE: np.tile(dates.to_numpy(), len(keep)),
        "horizon": np.tile(hs, len(keep)),
        "naive": np.repeat(naive[keep], horizon),
        "seasonal_naive": _seasonal(y, t, t + hs - 1 - season, naive)[keep].ravel(),
    }
    if weekly_season > 0:
        # Target j = t + h - 1; k = ceil(h / weekly_season) weeks back is the latest j - k*w < t.
        back = weekly_season * np.ceil(hs / weekly_season).astype(int)
        weekly = _seasonal(y, t, t + hs - 1 - back, naive)
        out[f"seasonal_naive_{weekly_season}"] = weekly[keep].ravel()
    return pd.DataFrame(out)


def _closed(col: pd.Series) -> np.ndarray:
    """A ``closed`` column as plain booleans; a missing value counts as open."""
    return col.astype("boolean").fillna(False).to_numpy(dtype=bool)


def _json_num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


@dataclass
class BacktestResult:
    """``frame``: one row per (origin, series, target date) with an actual: unique_id,
    origin, ds, horizon, y, is_holiday, scale, forecast, seasonal_naive, naive; daily data
    also ``seasonal_naive_7`` (see :func:`baseline_forecasts`).

    Closed days: when the model's predictions carry a boolean ``closed`` column (data with
    an open column; the forecast there is exactly 0), the frame keeps it and every metric
    (:meth:`overall`, :meth:`by`, :meth:`metrics`, :meth:`origin_rows`) scores only the rows
    of :attr:`scored`, where ``closed`` is False. Without the column (weekly data) every row
    is scored, exactly as before.
    """

    frame: pd.DataFrame
    holiday_weight: float

    @property
    def origins(self) -> list[str]:
        """The backtest origins as ISO dates, oldest first."""
        return [str(pd.Timestamp(o).date()) for o in sorted(self.frame["origin"].unique())]

    @property
    def predictions(self) -> list[str]:
        """The prediction columns scored (see :func:`prediction_columns`)."""
        return prediction_columns(self.frame)

    @property
    def scored(self) -> pd.DataFrame:
        """The rows the metrics score: ``frame`` without closed days."""
        if "closed" not in self.frame:
            return self.frame
        return self.frame[~_closed(self.frame["closed"])]

    def overall(self) -> pd.DataFrame:
        """One row per model: wmae, mae, rmse, bias, rmspe, n, and wmae ratio to seasonal
        naive."""
        f = self.scored.assign(_all="all")
        out = score_by(f, "_all", self.predictions, self.holiday_weight).drop(columns="_all")
        base = float(out.loc[out.model == "seasonal_naive", "wmae"].iloc[0])
        out["wmae_vs_seasonal_naive"] = out["wmae"] / base if base > 0 else np.nan
        return out.set_index("model")

    def by(self, key: str | list[str]) -> pd.DataFrame:
        """Metrics per group (e.g. ``"horizon"``, ``"origin"``, ``"unique_id"``)."""
        return score_by(self.scored, key, self.predictions, self.holiday_weight)

    def metrics(self) -> dict[str, float]:
        """Flat dict for MLflow: ``<model>_<metric>`` plus the ratio to seasonal naive."""
        ov = self.overall()
        out = {f"{m}_{k}": float(ov.loc[m, k]) for m in ov.index for k in ov.columns}
        return {k.replace("forecast_", "model_"): v for k, v in out.items()}

    def origin_rows(self) -> list[dict[str, Any]]:
        """One plain (JSON-able) dict per origin, oldest first: origin (ISO date), n,
        ``<model>_wmae`` and ``<model>_rmspe`` per prediction column, and
        wmae_vs_seasonal_naive. A metric that cannot be computed is None."""
        per = self.by("origin").set_index(["origin", "model"])
        rows = []
        for origin in sorted(per.index.get_level_values("origin").unique()):
            o = per.loc[origin]
            row: dict[str, Any] = {"origin": str(pd.Timestamp(origin).date())}
            row["n"] = int(o.loc["forecast", "n"])
            for m in o.index:
                row[f"{m}_wmae"] = _json_num(o.loc[m, "wmae"])
                row[f"{m}_rmspe"] = _json_num(o.loc[m, "rmspe"])
            base = float(o.loc["seasonal_naive", "wmae"])
            ratio = float(o.loc["forecast", "wmae"]) / base if base > 0 else math.nan
            row["wmae_vs_seasonal_naive"] = _json_num(ratio)
            rows.append(row)
        return rows


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


def fit_with(
    model: GlobalForecaster,
    data: SalesData,
    fit: Callable[[GlobalForecaster, SalesData], GlobalForecaster] | None = None,
    rows: pd.DataFrame | None = None,
) -> GlobalForecaster:
    """``model`` fitted on ``data``: by ``fit`` when given (which builds its own rows, e.g.
    per shard on the workers), else ``model.fit(data, rows)`` in this process (``rows``:
    ``model.training_rows(data)`` if already built)."""
    return fit(model, data) if fit is not None else model.fit(data, rows)


def forecast_with(
    model: GlobalForecaster,
    data: SalesData,
    origin: pd.Timestamp,
    predict: Callable[..., pd.DataFrame] | None = None,
    with_baseline: bool = False,
) -> pd.DataFrame:
    """``model.predict(data, origin, with_baseline)``, or the same made by ``predict``
    (``predict(model, data, origin, with_baseline)``: shard by shard on Dask)."""
    if predict is not None:
        return predict(model, data, origin, with_baseline)
    return model.predict(data, origin=origin, with_baseline=with_baseline)


def run_backtest(
    data: SalesData,
    make_model: Callable[[], GlobalForecaster],
    n_origins: int,
    step: int,
    holiday_weight: float = 5.0,
    origins: list[pd.Timestamp] | None = None,
    on_origin: Callable[[pd.Timestamp, GlobalForecaster], None] | None = None,
    with_baseline: bool = False,
    workers: int = 1,
    fit: Callable[[GlobalForecaster, SalesData], GlobalForecaster] | None = None,
    predict: Callable[..., pd.DataFrame] | None = None,
) -> BacktestResult:
    """Fit a fresh model per origin on data before it; score model and baselines after it.
    The predictions' columns (``closed`` among them, when the model emits it) are kept.
    ``with_baseline``: the frame also carries the model's own ``baseline`` (see
    :meth:`GlobalForecaster.predict`). ``workers``: origins fitted at a time, in threads
    (XGBoost releases the GIL; its threads scale poorly on few cores, so two fits side by
    side finish sooner than one after the other); ``on_origin`` is called oldest first.
    ``fit``: how each origin's model is fitted (``fit(model, data)``, e.g. on Dask:
    :class:`salesflow.modelling.dask_fit.DaskFitter`); default ``model.fit(data)``.
    ``predict``: how each origin's forecasts are made (``predict(model, data, origin,
    with_baseline)``, e.g. shard by shard on Dask: ``DaskFitter.predict``); default
    ``model.predict``."""
    proto = make_model()
    # Only the target: the baselines need no covariates (categorical ones may be text here),
    # and closed days keep their recorded value (0): see baseline_forecasts.
    grid = make_grid(data.history, None, [], data.freq)
    idx = (
        [grid.index_of(o) for o in origins]
        if origins
        else rolling_origins(grid, proto.horizon, n_origins, step, proto.min_train_history)
    )

    def one(t: int) -> tuple[pd.DataFrame, GlobalForecaster]:
        origin = grid.dates[t]
        known = data.as_of(origin - period_step(data.freq))
        model = fit_with(make_model(), known, fit)
        pred = forecast_with(model, data, origin, predict, with_baseline)
        weekly = getattr(model.spec, "weekly_season", 0)
        base = baseline_forecasts(grid, t, model.horizon, model.spec.season_length, weekly)
        return pred.merge(base, on=[ID, DATE, "horizon"], how="inner"), model

    if workers > 1 and len(idx) > 1:
        with ThreadPoolExecutor(min(workers, len(idx)), thread_name_prefix="backtest") as ex:
            done = list(ex.map(one, idx))
    else:
        done = [one(t) for t in idx]
    if on_origin:
        for t, (_rows, model) in zip(idx, done, strict=True):
            on_origin(grid.dates[t], model)
    frame = pd.concat([rows for rows, _model in done], ignore_index=True)
    actual = data.history[[ID, DATE, "y", "is_holiday"]]
    frame = frame.merge(actual, on=[ID, DATE], how="inner")
    frame["is_holiday"] = frame["is_holiday"].astype(bool)
    if "closed" in frame:
        frame["closed"] = _closed(frame["closed"])
    return BacktestResult(frame, holiday_weight)
