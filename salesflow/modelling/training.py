"""Training and evaluation as plain functions: settings in, model and figures out."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from features.build import FeatureSpec
from features.holidays import HolidaySpec
from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from salesflow.modelling import plots
from salesflow.modelling.backtest import BacktestResult, fit_with, run_backtest
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.registry import code_version, data_fingerprint

Fitter = Callable[[GlobalForecaster, SalesData], GlobalForecaster]
"""``fit(model, data) -> model``: how a run fits its models when not ``model.fit(data)``
(on Dask: :class:`salesflow.modelling.dask_fit.DaskFitter`)."""


def make_forecaster(settings: Settings) -> GlobalForecaster:
    """An unfitted forecaster configured from ``settings.model`` and ``settings.features``."""
    m, f = settings.model, settings.features
    params = {
        "n_estimators": m.n_estimators,
        "learning_rate": m.learning_rate,
        "max_depth": m.max_depth,
        "subsample": m.subsample,
        "colsample_bytree": m.colsample_bytree,
        "min_child_weight": m.min_child_weight,
        "n_jobs": m.n_jobs,
        "random_state": m.seed,
        "tree_method": "hist",
        "max_bin": m.max_bin,
    }
    f = f.for_freq(settings.data.freq)  # already filled by Settings; sections built by hand
    spec = FeatureSpec(
        season_length=int(f.season_length or 52),
        recent_lags=int(f.recent_lags or 4),
        rolling_windows=tuple(f.rolling_windows or ()),
        future_covariates=f.future_covariates,
        denoise_rank=f.denoise_rank,
        level_window=int(f.level_window or 8),
        level_shrink=f.level_shrink,
        two_season_weight=f.two_season_weight,
        weekly_season=int(f.weekly_season or 0),
        profile_weeks=f.profile_weeks,
        profile_match=tuple(f.profile_match),
        holidays=HolidaySpec(f.holidays.calendar, f.holidays.country, f.holidays.subdiv),
    )
    return GlobalForecaster(
        horizon=m.horizon,
        spec=spec,
        params=params,
        min_train_history=m.min_train_history,
        origin_stride=m.origin_stride,
        holiday_weight=settings.backtest.holiday_weight,
        min_forecast=m.min_forecast,
        native_categorical=m.native_categorical,
        max_train_rows=m.max_train_rows,
    )


def evaluate(data: SalesData, settings: Settings, fit: Fitter | None = None) -> BacktestResult:
    """Rolling-origin backtest of the configured forecaster against the baselines. With a
    ``fit`` (Dask) the origins are fitted one after the other, each across the cluster, and
    forecast shard by shard on the workers (when ``fit`` has a ``predict``)."""
    b = settings.backtest
    return run_backtest(
        data,
        lambda: make_forecaster(settings),
        b.n_origins,
        b.step,
        b.holiday_weight,
        workers=1 if fit else max(1, settings.model.concurrent_fits - 1),
        fit=fit,
        predict=getattr(fit, "predict", None),  # on Dask: shard by shard on the workers
    )


def fit_champion_candidate(
    data: SalesData, settings: Settings, bt: BacktestResult, fit: Fitter | None = None
):
    """Fit on all the data; prediction intervals come from the backtest residuals."""
    return fit_with(make_forecaster(settings), data, fit).set_intervals(bt.frame)


def fit_and_evaluate(
    data: SalesData,
    settings: Settings,
    model: GlobalForecaster | None = None,
    rows: pd.DataFrame | None = None,
    fit: Fitter | None = None,
) -> tuple[GlobalForecaster, BacktestResult]:
    """What the training flow's fit and backtest steps compute, without Prefect (for
    benchmarks and scripts): the final fit in a thread beside the backtest when
    ``model.concurrent_fits`` > 1, then the intervals from the backtest. ``rows``: the
    output of ``model.training_rows(data)``, built here when not given. ``fit`` (Dask):
    the final fit, then the backtest's, one at a time (``rows`` unused)."""
    model = make_forecaster(settings) if model is None else model
    if fit is not None:
        fit(model, data)
        bt = evaluate(data, settings, fit)
        return model.set_intervals(bt.frame), bt
    rows = model.training_rows(data) if rows is None else rows
    if settings.model.concurrent_fits > 1:
        with ThreadPoolExecutor(1, thread_name_prefix="final-fit") as ex:
            fitted = ex.submit(model.fit, data, rows)
            bt = evaluate(data, settings)
            fitted.result()
    else:
        model.fit(data, rows)
        bt = evaluate(data, settings)
    return model.set_intervals(bt.frame), bt


def held_out_bands(model: GlobalForecaster, frame: pd.DataFrame) -> pd.DataFrame:
    """The backtest rows of the last origin with 80/95 % bounds whose widths come from the
    other origins' residuals only (honest bands for the plot); no bounds with one origin."""
    last = frame[frame["origin"] == frame["origin"].max()].copy()
    others = frame[frame["origin"] < frame["origin"].max()]
    if others.empty:
        return last
    return model.clone().set_intervals(others)._add_intervals(last)


@dataclass
class RunRecord:
    """Everything the registration step logs to MLflow."""

    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def run_record(
    model: GlobalForecaster, data: SalesData, bt: BacktestResult, settings: Settings
) -> RunRecord:
    """Params, metrics, tags, plots and tables of a training run."""
    by_h = bt.by("horizon")
    gains = model.model_.get_booster().get_score(importance_type="gain")
    params = {
        **model.describe(),
        "data_source": data.source,
        "n_series": data.n_series,
        "n_rows": len(data.history),
        "data_start": str(data.history["ds"].min().date()),
        "data_end": str(data.last_date.date()),
        "freq": data.freq,
        "n_train_rows": model.n_train_rows_,
        "n_candidate_rows": model.n_candidate_rows_,
        "backtest_origins": ",".join(str(o.date()) for o in sorted(bt.frame["origin"].unique())),
        "features": ",".join(model.feature_names_),
    }
    tags = {
        "data_fingerprint": data_fingerprint(data),
        "code_version": code_version(),
        "data_source": data.source,
        "trained_until": str(data.last_date.date()),
        **settings.provenance,  # env and model name actually used (run and version tags)
    }
    return RunRecord(
        params=params,
        metrics={**bt.metrics(), "fit_seconds": model.fit_seconds_},
        tags=tags,
        figures={
            "feature_importance": plots.feature_importance(model.feature_names_, gains),
            "forecast_vs_actual": plots.forecast_vs_actual(held_out_bands(model, bt.frame)),
            "error_by_horizon": plots.error_by_horizon(by_h),
        },
        tables={
            "metrics_overall": bt.overall().reset_index(),
            "metrics_by_horizon": by_h,
            "metrics_by_series": bt.by("unique_id"),
        },
    )


def example_input(data: SalesData, n_series: int = 2) -> pd.DataFrame:
    """A small history frame (a couple of series) for the MLflow signature and example."""
    ids = data.history["unique_id"].drop_duplicates().head(n_series)
    return data.history[data.history["unique_id"].isin(ids)].reset_index(drop=True)
