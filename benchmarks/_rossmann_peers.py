"""The Rossmann benchmark's model-based methods: mlforecast + LightGBM, statsforecast MSTL
and salesflow itself, each from one origin.

Every ``forecast_*(panel, stores, origin)`` takes the daily panel of ``_rossmann.daily_panel``
(every store, every day; unobserved rows imputed and flagged ``observed = False``) and
store.csv, uses only the rows before ``origin`` plus the known-ahead columns (Open, Promo,
StateHoliday, SchoolHoliday) of the 42 target days, and returns (frame, info): the frame has
``Store, Date, forecast`` (salesflow also ``lo_80, hi_80, lo_95, hi_95``); ``_rossmann``
sets closed days to 0 and clips at 0 afterwards, for every method alike.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from _peers import LGBM_PARAMS as WALMART_LGBM_PARAMS
from _peers import fit_predict_timed
from _rossmann import HORIZON, history, window

# mlforecast + LightGBM: the recipe was fixed before any origin was scored. Lags are whole
# weeks (7 .. 42) plus 364, so every lag of a target day is a known day or a forecast of the
# same weekday; rolling means of lag 7 (a week, four weeks, the last four same weekdays);
# calendar features; known-ahead exogenous; statics. Target log1p (RMSPE is a relative
# error). Trained WITH closed days (Sales 0, Open = 0 as a feature) so the recursion's lags
# see what really happens on closed days; imputed rows (the gap) weigh 0.
MLF_LAGS = [7, 14, 21, 28, 35, 42, 364]
# The Walmart recipe's LightGBM settings, with squared error on the log1p target.
LGBM_PARAMS: dict[str, Any] = {**WALMART_LGBM_PARAMS, "objective": "l2"}
EXOG = ["Open", "Promo", "SchoolHoliday", "StateHoliday"]
STATIC = ["StoreType", "Assortment", "CompetitionDistance", "Promo2"]
MSTL_SEASONS = [7, 364]


def _statics(stores: pd.DataFrame) -> pd.DataFrame:
    s = stores[["Store", *STATIC]].copy()
    for c in ("StoreType", "Assortment"):
        s[c] = s[c].astype("category").cat.codes.astype(np.int16)
    s["CompetitionDistance"] = s["CompetitionDistance"].fillna(1e5)  # 3 stores: none known
    return s


def _exog(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[["Store", "Date", *EXOG]].copy()
    out["StateHoliday"] = out["StateHoliday"].map({"0": 0, "a": 1, "b": 2, "c": 3}).astype(int)
    return out


def week_of_year(dates: pd.DatetimeIndex) -> np.ndarray:
    return dates.isocalendar().week.to_numpy(dtype=np.int32)


def forecast_mlforecast(
    panel: pd.DataFrame, stores: pd.DataFrame, origin: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """mlforecast + LightGBM (``MLF_LAGS``, ``LGBM_PARAMS``), recursive over 42 days."""
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean, SeasonalRollingMean
    from mlforecast.target_transforms import GlobalSklearnTransformer
    from sklearn.preprocessing import FunctionTransformer

    t0 = time.perf_counter()
    hist = history(panel, origin)
    train = _exog(hist).merge(_statics(stores), on="Store")
    train["y"] = hist["Sales"].astype(float).to_numpy()
    train["weight"] = hist["observed"].astype(float).to_numpy()
    train = train.rename(columns={"Store": "unique_id", "Date": "ds"})
    x_df = _exog(window(panel, origin)).rename(columns={"Store": "unique_id", "Date": "ds"})
    prep_s = time.perf_counter() - t0
    log1p = FunctionTransformer(np.log1p, np.expm1)
    fcst = MLForecast(
        models={"lgbm": lgb.LGBMRegressor(**LGBM_PARAMS)},
        freq="D",
        lags=MLF_LAGS,
        lag_transforms={
            7: [
                RollingMean(7),
                RollingMean(28),
                SeasonalRollingMean(season_length=7, window_size=4),
            ]
        },
        date_features=["dayofweek", "day", "month", week_of_year],
        target_transforms=[GlobalSklearnTransformer(log1p)],
        num_threads=2,
    )
    pred, fit_s, predict_s = fit_predict_timed(fcst, train, x_df, STATIC, HORIZON)
    out = pred.rename(columns={"unique_id": "Store", "ds": "Date", "lgbm": "forecast"})
    info = {
        "prep_s": round(prep_s, 2),
        "fit_s": round(fit_s, 2),
        "predict_s": round(predict_s, 2),
        "train_rows_in": len(train),
        "features": list(fcst.ts.features_order_),
    }
    return out, info


def forecast_mstl(
    panel: pd.DataFrame, stores: pd.DataFrame, origin: str, sample: int | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """statsforecast MSTL(season_length=[7, 364]) with its default trend forecaster
    AutoETS(model="ZZN"), per store on the daily grid with closed days as 0 (what was
    sold) and the imputed gap rows as imputed. ``sample``: that many stores (seed 0)."""
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS

    hist = history(panel, origin)
    chosen = sorted(hist["Store"].unique())
    if sample:
        chosen = sorted(np.random.default_rng(0).choice(chosen, sample, replace=False))
        hist = hist[hist["Store"].isin(chosen)]
    df = hist.rename(columns={"Store": "unique_id", "Date": "ds", "Sales": "y"})
    df = df[["unique_id", "ds", "y"]].astype({"y": float})
    model = MSTL(season_length=MSTL_SEASONS, trend_forecaster=AutoETS(model="ZZN"))
    t1 = time.perf_counter()
    pred = StatsForecast(models=[model], freq="D", n_jobs=2).forecast(df=df, h=HORIZON)
    fit_s = time.perf_counter() - t1
    out = pred.rename(columns={"unique_id": "Store", "ds": "Date", "MSTL": "forecast"})
    info = {"fit_s": round(fit_s, 2), "stores": len(chosen), "sampled": bool(sample)}
    return out[["Store", "Date", "forecast"]], info


def forecast_salesflow(
    panel: pd.DataFrame,
    stores: pd.DataFrame,
    origin: str,
    data_path: str = "",
    env: str = "rossmann",
    intervals: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """salesflow from ``origin`` on its own loading of the folder (``configs/<env>.yaml``).

    ``intervals``: as ``salesflow train`` would have run on the data before the origin --
    its backtest (``evaluate``) for the interval widths, then the fit on everything before
    the origin; the forecast carries lo/hi 80/95. Without: ``run_backtest(origins=[T])``,
    one fit, point forecasts only (the same fit: same rows, same seed)."""
    from salesflow.config.settings import load_settings
    from salesflow.data.sources import load_sales
    from salesflow.modelling.backtest import run_backtest
    from salesflow.modelling.training import evaluate, fit_champion_candidate, make_forecaster

    t0 = time.perf_counter()
    settings = load_settings(env, data={"path": data_path})
    data = load_sales(settings.data)
    load_s = time.perf_counter() - t0
    t = pd.Timestamp(origin)
    info: dict[str, Any] = {"load_s": round(load_s, 2), "env": env, "intervals": intervals}
    t1 = time.perf_counter()
    if intervals:
        known = data.as_of(t - pd.Timedelta(days=1))
        bt = evaluate(known, settings)
        info["backtest_s"] = round(time.perf_counter() - t1, 2)
        info["backtest_origins"] = [str(pd.Timestamp(o).date()) for o in bt.origins]
        model = fit_champion_candidate(known, settings, bt)
        t2 = time.perf_counter()
        pred = model.predict(data, origin=t)
        info["predict_s"] = round(time.perf_counter() - t2, 2)
    else:
        fits: list[Any] = []
        bt = run_backtest(
            data, lambda: make_forecaster(settings), 1, HORIZON,
            settings.backtest.holiday_weight, origins=[t], on_origin=lambda _o, m: fits.append(m),
        )  # fmt: skip
        pred, model = bt.frame, fits[0]
    info["fit_s"] = round(model.fit_seconds_, 2)
    info["train_s"] = round(time.perf_counter() - t1, 2)
    info["train_rows"] = getattr(model, "n_train_rows_", None)
    cols = [c for c in ("forecast", "lo_80", "hi_80", "lo_95", "hi_95") if c in pred]
    out = pred[["Store", "ds", *cols]].rename(columns={"ds": "Date"})
    out["Store"] = out["Store"].astype(int)
    return out, info


FORECASTERS = {
    "mlforecast_lgbm": forecast_mlforecast,
    "statsforecast_mstl": forecast_mstl,
    "salesflow": forecast_salesflow,
}
