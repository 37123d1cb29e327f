"""The peers salesflow is compared with: Nixtla mlforecast (LightGBM) and statsforecast.

Both see the same data as salesflow (the validation gate's output) cut at the same origin.
They need regular series, so each series is put on the weekly grid from its first
observation to the week before the origin, missing weeks filled with 0 (a Walmart
store-department without a row sold nothing that week); salesflow's own features keep
them as missing instead. A series with fewer than ``season_length`` weeks on that grid is
not *eligible*: lag 52 / a seasonal model is undefined for it, and every peer leaves its
rows to salesflow's seasonal naive (see ``_accuracy.combine``).

Columns out of every ``forecast_*``: ``unique_id, ds, <method>``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from features.build import period_step
from features.calendar import is_holiday_period
from salesflow.data.schema import DATE, HOLIDAY, ID, TARGET, SalesData

SEASON = 52
HORIZON = 39
# mlforecast + LightGBM, two recipes fixed before any test origin was scored (the docs'
# weekly setup: lags, rolling means of lag 1, calendar features, exogenous, statics):
# ``mlforecast_lgbm`` (primary): the Nixtla recipe for seasonal data, a seasonal difference
#   (``Differences([52])``) as target transform, so the model learns a correction to last
#   year's value and holiday spikes carry over; lags 1-4 of the difference.
# ``mlforecast_lgbm_raw``: the level itself with lags 1-4 and 52 (no target transform).
MLF_RECIPES: dict[str, dict[str, Any]] = {
    "mlforecast_lgbm": {"lags": [1, 2, 3, 4], "diff": True},
    "mlforecast_lgbm_raw": {"lags": [1, 2, 3, 4, 52], "diff": False},
}
LGBM_PARAMS: dict[str, Any] = {
    "n_estimators": 500,
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_child_samples": 20,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "objective": "l1",  # with holiday weight 5 below: the loss is the WMAE itself
    "n_jobs": 2,
    "random_state": 7,
    "verbose": -1,
}
STATIC = ["store", "dept", "store_type", "store_size"]


def week_of_year(dates: pd.DatetimeIndex) -> np.ndarray:
    """ISO week number (``DatetimeIndex.week`` is gone in pandas 2)."""
    return dates.isocalendar().week.to_numpy(dtype=np.int32)


def store_week_table(data: SalesData) -> pd.DataFrame:
    """One row per (store, ds): is_holiday and the covariates, history and future alike
    (covariates are known ahead; the target is not taken from here)."""
    cols = ["store", DATE, HOLIDAY, *data.covariates]
    both = pd.concat([data.history[cols], data.future[cols]], ignore_index=True)
    return both.drop_duplicates(["store", DATE]).reset_index(drop=True)


def _with_exog(frame: pd.DataFrame, data: SalesData, table: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (unique_id, ds, ...) plus static columns, is_holiday and covariates."""
    static = data.static_frame()[[ID, *STATIC]]
    out = frame.merge(static, on=ID, how="left").merge(table, on=["store", DATE], how="left")
    hol = pd.Series(is_holiday_period(out[DATE], data.freq), index=out.index)
    out[HOLIDAY] = out[HOLIDAY].astype("boolean").fillna(hol).astype(bool)
    out = out.sort_values([ID, DATE], kind="stable")
    out[data.covariates] = out.groupby(ID)[data.covariates].ffill().bfill().fillna(0.0)
    return out.reset_index(drop=True)


def eligible_ids(data: SalesData, origin: pd.Timestamp) -> list[str]:
    """Series with at least ``SEASON`` weeks from their first observation to the origin."""
    hist = data.history
    first = hist.loc[hist[DATE] < origin].groupby(ID)[DATE].min()
    weeks = (origin - first) / period_step(data.freq)
    return sorted(weeks.index[weeks >= SEASON])


def regular_panel(data: SalesData, origin: pd.Timestamp) -> tuple[pd.DataFrame, list[str]]:
    """History before ``origin`` on the weekly grid, gaps filled with 0, and the ids of the
    eligible series (:func:`eligible_ids`). Columns out: unique_id, ds, y."""
    from utilsforecast.preprocessing import fill_gaps

    known = data.as_of(origin - period_step(data.freq)).history[[ID, DATE, TARGET]]
    panel = fill_gaps(known, freq=data.freq, start="per_serie", end="global")
    panel[TARGET] = panel[TARGET].fillna(0.0)
    return panel.reset_index(drop=True), eligible_ids(data, origin)


def target_dates(origin: pd.Timestamp, freq: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([origin + period_step(freq) * h for h in range(HORIZON)])


def _categorical(frame: pd.DataFrame, cats: dict[str, list[str]]) -> pd.DataFrame:
    for c, values in cats.items():
        frame[c] = pd.Categorical(frame[c].astype(str), categories=values)
    return frame


def _mlforecast_frames(
    data: SalesData, origin: pd.Timestamp, only_eligible: bool
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Training frame (unique_id, ds, y, statics, exogenous, weight) and the future
    exogenous frame X_df for the 39 target dates; and the eligible ids."""
    panel, eligible = regular_panel(data, origin)
    if only_eligible:
        panel = panel[panel[ID].isin(eligible)].reset_index(drop=True)
    table = store_week_table(data)
    train = _with_exog(panel, data, table)
    cats = {c: sorted(train[c].astype(str).unique()) for c in ("store", "dept", "store_type")}
    train = _categorical(train, cats)
    train["weight"] = np.where(train[HOLIDAY], 5.0, 1.0)
    train[HOLIDAY] = train[HOLIDAY].astype(np.int8)
    ids = sorted(train[ID].unique())
    future = pd.MultiIndex.from_product(
        [ids, target_dates(origin, data.freq)], names=[ID, DATE]
    ).to_frame(index=False)
    x_df = _with_exog(future, data, table).drop(columns=STATIC)
    x_df[HOLIDAY] = x_df[HOLIDAY].astype(np.int8)
    return train, x_df, eligible


def forecast_mlforecast(
    data: SalesData, origin: pd.Timestamp, recipe: str = "mlforecast_lgbm"
) -> tuple[pd.DataFrame, dict]:
    """LightGBM through mlforecast, recursive over 39 weeks (``MLF_RECIPES[recipe]``).

    Features: the recipe's lags, rolling means of lag 1 over 4 and 13 weeks, week of year
    and month, static store, dept and store type (categorical) and store size, and the
    known-ahead exogenous is_holiday and 9 store-week covariates of features.csv. L1 loss
    with holiday weeks weighted 5. The seasonal-difference recipe trains on the eligible
    series only (a difference of 52 needs 52 weeks)."""
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean
    from mlforecast.target_transforms import Differences

    cfg = MLF_RECIPES[recipe]
    t0 = time.perf_counter()
    train, x_df, eligible = _mlforecast_frames(data, origin, only_eligible=cfg["diff"])
    prep_s = time.perf_counter() - t0
    fcst = MLForecast(
        models={"lgbm": lgb.LGBMRegressor(**LGBM_PARAMS)},
        freq=data.freq,
        lags=cfg["lags"],
        lag_transforms={1: [RollingMean(window_size=4), RollingMean(13, min_samples=1)]},
        date_features=[week_of_year, "month"],
        target_transforms=[Differences([SEASON])] if cfg["diff"] else None,
        num_threads=2,
    )
    pred, fit_s, predict_s = fit_predict_timed(fcst, train, x_df, STATIC, HORIZON)
    out = pred.rename(columns={"lgbm": recipe})[[ID, DATE, recipe]]
    out = out[out[ID].isin(eligible)].reset_index(drop=True)
    timing = {
        "prep_s": prep_s,
        "fit_s": fit_s,
        "predict_s": predict_s,
        "train_rows": len(train),
        "series_fitted": int(train[ID].nunique()),
        "series_eligible": len(eligible),
        "features": list(fcst.ts.features_order_),
    }
    return out, timing


def fit_predict_timed(
    fcst: Any, train: pd.DataFrame, x_df: pd.DataFrame, static: list[str], horizon: int
) -> tuple[pd.DataFrame, float, float]:
    """Fit an ``MLForecast`` on ``train`` (weights in ``weight``) and forecast ``horizon``
    periods with the future exogenous ``x_df``: the forecasts, fit and predict seconds."""
    t1 = time.perf_counter()
    fcst.fit(train, static_features=static, weight_col="weight")
    fit_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    pred = fcst.predict(horizon, X_df=x_df)
    return pred, fit_s, time.perf_counter() - t2


def _statsforecast(
    data: SalesData, origin: pd.Timestamp, model: Any, column: str
) -> tuple[pd.DataFrame, dict]:
    """One statsforecast model on the eligible series; ``column`` names its forecasts."""
    from statsforecast import StatsForecast

    t0 = time.perf_counter()
    panel, eligible = regular_panel(data, origin)
    panel = panel[panel[ID].isin(eligible)].reset_index(drop=True)
    prep_s = time.perf_counter() - t0
    sf = StatsForecast(models=[model], freq=data.freq, n_jobs=2)
    t1 = time.perf_counter()
    sf.fit(panel)
    fit_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    pred = sf.predict(h=HORIZON)
    predict_s = time.perf_counter() - t2
    pred = pred.reset_index() if ID not in pred.columns else pred
    name = next(c for c in pred.columns if c not in (ID, DATE))
    out = pred.rename(columns={name: column})[[ID, DATE, column]]
    timing = {
        "prep_s": prep_s,
        "fit_s": fit_s,
        "predict_s": predict_s,
        "train_rows": len(panel),
        "series_fitted": len(eligible),
        "series_eligible": len(eligible),
    }
    return out, timing


def forecast_mstl(data: SalesData, origin: pd.Timestamp) -> tuple[pd.DataFrame, dict]:
    """statsforecast MSTL (STL with period 52, seasonal naive on the seasonal part) with
    its default trend forecaster AutoETS(model="ZZN")."""
    from statsforecast.models import MSTL, AutoETS

    model = MSTL(season_length=SEASON, trend_forecaster=AutoETS(model="ZZN"))
    return _statsforecast(data, origin, model, "statsforecast")


def forecast_autoets(data: SalesData, origin: pd.Timestamp) -> tuple[pd.DataFrame, dict]:
    """statsforecast AutoETS(season_length=52): statsforecast, like R's ets, allows no
    seasonal ETS above a season of 24, so this is a non-seasonal ETS on weekly data."""
    from statsforecast.models import AutoETS

    return _statsforecast(data, origin, AutoETS(season_length=SEASON), "statsforecast_autoets")


def forecast_seasonal_naive(data: SalesData, origin: pd.Timestamp) -> tuple[pd.DataFrame, dict]:
    """statsforecast SeasonalNaive(52): the cross-check of salesflow's seasonal naive."""
    from statsforecast.models import SeasonalNaive

    return _statsforecast(data, origin, SeasonalNaive(season_length=SEASON), "sf_seasonal_naive")


def forecast_mlforecast_raw(data: SalesData, origin: pd.Timestamp) -> tuple[pd.DataFrame, dict]:
    return forecast_mlforecast(data, origin, "mlforecast_lgbm_raw")


PEERS = {
    "mlforecast_lgbm": forecast_mlforecast,
    "mlforecast_lgbm_raw": forecast_mlforecast_raw,
    "statsforecast": forecast_mstl,
    "statsforecast_autoets": forecast_autoets,
    "sf_seasonal_naive": forecast_seasonal_naive,
}
