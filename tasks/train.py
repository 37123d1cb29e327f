"""Training and evaluation steps."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from salesflow.modelling.backtest import BacktestResult
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.report import metrics_table, origin_table
from salesflow.modelling.training import evaluate, make_forecaster


@task(name="prepare-model", cache_policy=NO_CACHE)
def prepare_model(settings: Settings) -> GlobalForecaster:
    """An unfitted forecaster from the model and feature settings."""
    return make_forecaster(settings)


@task(name="train-model", cache_policy=NO_CACHE)
def train_model(data: SalesData, rows: pd.DataFrame, model: GlobalForecaster) -> GlobalForecaster:
    """Fit the global XGBoost forecaster on the training rows."""
    model.fit(data, rows)
    sampled = model.n_candidate_rows_
    sample = f" (a sample of {sampled:,}: model.max_train_rows)"
    get_run_logger().info(
        "Trained on %s rows%s of %d series in %.1f s (horizon %d)",
        f"{model.n_train_rows_:,}",
        sample if sampled > model.n_train_rows_ else "",
        model.n_series_,
        model.fit_seconds_,
        model.horizon,
    )
    return model


@task(name="evaluate-backtest", cache_policy=NO_CACHE)
def evaluate_backtest(data: SalesData, settings: Settings) -> BacktestResult:
    """Rolling-origin backtest vs seasonal naive and naive (a fresh model per origin, so it
    can run beside the final fit). Logs the pooled figures and the per-origin table; the
    artifact has both tables."""
    bt = evaluate(data, settings)
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
    data: SalesData, rows: pd.DataFrame, model: GlobalForecaster, settings: Settings
) -> tuple[GlobalForecaster, BacktestResult]:
    """The final fit and the backtest, side by side when ``model.concurrent_fits`` > 1
    (two task runs at once in the Prefect UI), then the intervals from the backtest."""
    if settings.model.concurrent_fits > 1:
        fitted = train_model.submit(data, rows, model)
        backtest = evaluate_backtest.submit(data, settings)
        model, bt = fitted.result(), backtest.result()
    else:
        model = train_model(data, rows, model)
        bt = evaluate_backtest(data, settings)
    return set_intervals(model, bt), bt
