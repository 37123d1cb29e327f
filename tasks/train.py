"""Training and evaluation steps.

``compute.engine: dask``: the flow opens one cluster client for the run
(:func:`open_fitter`) and passes its fitter to these tasks, which still run in the flow's
process (as with ``engine: local``); only ``xgboost.dask`` and the feature building of each
shard run on the Dask workers, so no Prefect code runs there and Prefect's temporary server
is enough (no ``PREFECT_API_URL`` needed, unlike the Dask task runner of batch scoring)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from salesflow.modelling.backtest import BacktestResult, fit_with
from salesflow.modelling.dask_fit import compute_fitter, fit_summary
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.report import metrics_table, origin_table
from salesflow.modelling.training import Fitter, evaluate, make_forecaster


@contextmanager
def open_fitter(settings: Settings) -> Iterator[Fitter | None]:
    """The run's fitter: with ``compute.engine: dask`` one client on the configured cluster
    (a local cluster is started and closed here), logged; None for ``engine: local``."""
    with compute_fitter(settings.compute) as fitter:
        if fitter is not None:
            info = fitter.client.scheduler_info()
            get_run_logger().info(
                "Fitting with xgboost.dask on the cluster at %s (%d workers, %s)",
                info.get("address"),
                len(info.get("workers", {})),
                settings.compute.address or "a local cluster started for this run",
            )
        yield fitter


@task(name="prepare-model", cache_policy=NO_CACHE)
def prepare_model(settings: Settings) -> GlobalForecaster:
    """An unfitted forecaster from the model and feature settings."""
    return make_forecaster(settings)


@task(name="train-model", cache_policy=NO_CACHE)
def train_model(
    data: SalesData,
    rows: pd.DataFrame | None,
    model: GlobalForecaster,
    fitter: Fitter | None = None,
) -> GlobalForecaster:
    """Fit the global XGBoost forecaster on the training rows (``fitter``: on Dask, from
    rows built per shard on the workers; ``rows`` is then None)."""
    fit_with(model, data, fitter, rows)
    sampled = model.n_candidate_rows_
    sample = f" (a sample of {sampled:,}: model.max_train_rows)"
    where = fit_summary(model)
    get_run_logger().info(
        "Trained on %s rows%s of %d series in %.1f s (horizon %d)%s",
        f"{model.n_train_rows_:,}",
        sample if sampled > model.n_train_rows_ else "",
        model.n_series_,
        model.fit_seconds_,
        model.horizon,
        "" if where is None else f" with xgboost.dask: {where}",
    )
    return model


@task(name="evaluate-backtest", cache_policy=NO_CACHE)
def evaluate_backtest(
    data: SalesData, settings: Settings, fitter: Fitter | None = None
) -> BacktestResult:
    """Rolling-origin backtest vs seasonal naive and naive (a fresh model per origin, so it
    can run beside the final fit; with ``fitter`` each origin is fitted on Dask). Logs the
    pooled figures and the per-origin table; the artifact has both tables."""
    bt = evaluate(data, settings, fitter)
    ov, by_origin = bt.overall(), bt.origin_rows()
    log = get_run_logger()
    log.info(
        "Backtest over %d origins: WMAE %.1f vs seasonal naive %.1f (ratio %.3f); "
        "RMSPE %.3f vs %.3f",
        len(bt.origins),
        ov.loc["forecast", "wmae"],
        ov.loc["seasonal_naive", "wmae"],
        ov.loc["forecast", "wmae_vs_seasonal_naive"],
        ov.loc["forecast", "rmspe"],
        ov.loc["seasonal_naive", "rmspe"],
    )
    log.info("Backtest per origin:\n%s", origin_table(by_origin))
    create_markdown_artifact(
        key="backtest-metrics",
        markdown=metrics_table(ov, by_origin),
        description="Backtest vs baselines, pooled and per origin",
    )
    return bt


@task(name="set-intervals", cache_policy=NO_CACHE)
def set_intervals(model: GlobalForecaster, bt: BacktestResult) -> GlobalForecaster:
    """The fitted model's 80/95 % interval widths from the backtest's residuals."""
    model.set_intervals(bt.frame)
    return model


def fit_and_backtest(
    data: SalesData,
    rows: pd.DataFrame | None,
    model: GlobalForecaster,
    settings: Settings,
    fitter: Fitter | None = None,
) -> tuple[GlobalForecaster, BacktestResult]:
    """The final fit and the backtest, side by side when ``model.concurrent_fits`` > 1
    (two task runs at once in the Prefect UI), then the intervals from the backtest. With
    ``fitter`` (``compute.engine: dask``) one after the other: each fit spans the cluster."""
    if fitter is not None:
        model = train_model(data, rows, model, fitter)
        bt = evaluate_backtest(data, settings, fitter)
    elif settings.model.concurrent_fits > 1:
        fitted = train_model.submit(data, rows, model)
        backtest = evaluate_backtest.submit(data, settings)
        model, bt = fitted.result(), backtest.result()
    else:
        model = train_model(data, rows, model)
        bt = evaluate_backtest(data, settings)
    return set_intervals(model, bt), bt
