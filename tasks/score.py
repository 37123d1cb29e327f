"""Batch-scoring steps: load the champion, forecast every series, write the warehouse."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from sqlalchemy.exc import OperationalError

from salesflow.model import GlobalForecaster
from salesflow.registry import client, load_forecaster
from salesflow.schema import SalesData
from salesflow.scoring import ScoringNotes, score_series, warehouse_rows
from salesflow.settings import Settings
from salesflow.warehouse import WarehouseUnavailable, WriteResult, redact_url, write_forecasts


@task(name="load-champion", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def load_champion(settings: Settings) -> tuple[GlobalForecaster, dict[str, Any]]:
    """The model version holding the champion alias, and its identity."""
    model, mv = load_forecaster(
        settings.tracking_uri, settings.model.name, settings.mlflow.champion_alias
    )
    get_run_logger().info(
        "Loaded %s version %s (alias '%s', MLflow run %s), trained until %s",
        mv.name,
        mv.version,
        settings.mlflow.champion_alias,
        mv.run_id,
        model.trained_until_.date(),
    )
    run = client(settings.tracking_uri).get_run(mv.run_id)
    return model, {
        "name": mv.name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "backtest_wmae": run.data.metrics.get("model_wmae"),
    }


@task(name="forecast-series", cache_policy=NO_CACHE)
def forecast_series(
    model: GlobalForecaster,
    identity: dict[str, Any],
    data: SalesData,
    origin: str | None = None,
) -> tuple[pd.DataFrame, ScoringNotes]:
    """Features at the origin with the training feature code, then the model's forecasts."""
    pred, notes = score_series(model, data, pd.Timestamp(origin) if origin else None)
    log = get_run_logger()
    log.info(
        "Forecast %d series x %d periods from origin %s",
        notes.n_series_forecast,
        model.horizon,
        notes.origin.date(),
    )
    if notes.skipped_no_history:
        log.warning("Skipped %d series with no history", len(notes.skipped_no_history))
    if notes.unseen_series:
        log.info("%d series were not in the training data", len(notes.unseen_series))
    if notes.covariate_rows_filled:
        log.warning(
            "%d target rows lacked covariates %s: filled with the last known value",
            notes.covariate_rows_filled,
            notes.covariate_columns_filled,
        )
    rows = warehouse_rows(
        pred, model.keys_, identity["name"], identity["version"], identity["run_id"], flow_run.id
    )
    return rows, notes


def _warehouse_unreachable(task, task_run, state) -> bool:
    """Retry only when the database could not be reached; bad data fails at once."""
    try:
        state.result()
    except (WarehouseUnavailable, OperationalError):
        return True
    except Exception:
        return False
    return False


@task(
    name="write-forecasts",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=_warehouse_unreachable,
    cache_policy=NO_CACHE,
)
def write_to_warehouse(rows: pd.DataFrame, settings: Settings) -> WriteResult:
    """Upsert the rows in one transaction (re-running an origin replaces its rows)."""
    w = settings.warehouse
    res = write_forecasts(settings.warehouse_url, rows, table=w.table, schema=w.schema_name)
    get_run_logger().info(
        "Wrote %s rows to %s in %s in %.2f s (%s new, %s replaced)",
        f"{res.rows_written:,}",
        res.table,
        redact_url(settings.warehouse_url),
        res.seconds,
        res.rows_inserted,
        res.rows_updated,
    )
    return res
