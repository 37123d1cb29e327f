"""Batch-scoring steps: load the champion, forecast every series, write the warehouse."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from salesflow.errors import UserError, retry_transient
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.registry import client, load_forecaster
from salesflow.modelling.scoring import ScoringNotes, score_series, warehouse_rows
from salesflow.storage.warehouse import (
    RunContext,
    WriteResult,
    describe_write,
    redact_url,
    write_forecasts,
)
from tasks import TRANSIENT_IO_RETRIES


@task(
    name="load-champion",
    **TRANSIENT_IO_RETRIES,
    cache_policy=NO_CACHE,
)
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


def parse_origin(origin: str | None) -> pd.Timestamp | None:
    """The ``origin`` parameter as a date (None: the period after the last observation)."""
    try:
        return pd.Timestamp(origin) if origin else None
    except ValueError:
        raise UserError(f"origin {origin!r} is not a date: use YYYY-MM-DD") from None


@task(name="forecast-series", cache_policy=NO_CACHE)
def forecast_series(
    model: GlobalForecaster,
    identity: dict[str, Any],
    data: SalesData,
    origin: str | None = None,
) -> tuple[pd.DataFrame, ScoringNotes]:
    """Features at the origin with the training feature code, then the model's forecasts."""
    pred, notes = score_series(model, data, parse_origin(origin))
    get_run_logger().info(
        "Forecast %d series x %d periods from origin %s",
        notes.n_series_forecast,
        model.horizon,
        notes.origin.date(),
    )
    log_notes(notes, getattr(model, "unknown_categories_", None) or {})
    rows = warehouse_rows(
        pred, model.keys_, identity["name"], identity["version"], identity["run_id"], flow_run.id
    )
    return rows, notes


def log_notes(notes: ScoringNotes, unknown: dict[str, list[str]]) -> None:
    """Warn about what scoring worked around: skipped and unseen series, categorical values
    not seen in training, covariates filled with the last known value."""
    log = get_run_logger()
    if notes.skipped_no_history:
        log.warning("Skipped %d series with no history", len(notes.skipped_no_history))
    if notes.unseen_series:
        log.info("%d series were not in the training data", len(notes.unseen_series))
    for column, values in unknown.items():
        log.warning(
            "Categorical covariate %r holds values not seen in training %s: treated as missing",
            column,
            values[:10],
        )
    if notes.covariate_rows_filled:
        log.warning(
            "%d target rows lacked covariates %s: filled with the last known value",
            notes.covariate_rows_filled,
            notes.covariate_columns_filled,
        )


@task(
    name="write-forecasts",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def write_to_warehouse(
    rows: pd.DataFrame,
    settings: Settings,
    notes: ScoringNotes | None = None,
    replace_origin: bool = False,
) -> WriteResult:
    """Upsert the rows in one transaction with their forecast_runs record; the origin's
    series absent from ``rows`` are kept unless ``replace_origin`` (then removed)."""
    w = settings.warehouse
    context = run_context(settings, notes, flow_run.id)
    res = write_forecasts(
        settings.warehouse_url,
        rows,
        table=w.table,
        schema=w.schema_name,
        replace_origin=replace_origin,
        runs_table=w.runs_table,
        context=context,
    )
    log = get_run_logger()
    url = redact_url(settings.warehouse_url)
    log.info("%s at %s in %.2f s", describe_write(res), url, res.seconds)
    warn_kept(log, res, rows["forecast_origin"].min())
    return res


def run_context(
    settings: Settings, notes: ScoringNotes | None, flow_run_id: str | None
) -> RunContext:
    """The forecast_runs record's run-level values of a write (local or staged)."""
    return RunContext(
        flow_run_id=flow_run_id,
        env=settings.env,
        as_of=settings.data.as_of,
        data_fingerprint=notes.data_fingerprint if notes else None,
        started_at=notes.started_at if notes else None,
    )


def warn_kept(log: Any, res: WriteResult, origin: Any) -> None:
    """Warn when series of the origin not in this run kept their earlier forecasts."""
    if res.kept:
        log.warning(
            "%d series of origin %s were not in this run and keep their earlier forecasts "
            "(rerun with replace_origin / --replace-origin to remove them)",
            len(res.kept),
            origin,
        )
