"""Registration step: log the run to MLflow and register the model version."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from salesflow import plots
from salesflow.backtest import BacktestResult
from salesflow.lifecycle import record_audit
from salesflow.model import GlobalForecaster
from salesflow.registry import RegisteredVersion, log_and_register
from salesflow.schema import SalesData
from salesflow.settings import Settings
from salesflow.training import example_input, run_record


@task(name="register-model", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def register_model(
    model: GlobalForecaster,
    data: SalesData,
    bt: BacktestResult,
    settings: Settings,
    alias_if_missing: bool = True,
) -> RegisteredVersion:
    """Log params, metrics, plots and the model; register it; alias it if no champion
    (unless ``alias_if_missing`` is False: the retraining flow decides by policy)."""
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    rec = run_record(model, data, bt, settings)
    try:
        reg = log_and_register(
            model,
            tracking_uri=settings.tracking_uri,
            experiment=settings.mlflow.experiment,
            artifact_location=settings.artifact_location,
            model_name=settings.model.name,
            alias=settings.mlflow.champion_alias,
            params=rec.params,
            metrics=rec.metrics,
            tags=rec.tags,
            figures=rec.figures,
            tables=rec.tables,
            input_example=example_input(data),
            set_alias_if_missing=alias_if_missing,
        )
    finally:
        for fig in rec.figures.values():
            plots.close(fig)
    if reg.alias:
        record_audit(
            settings.warehouse_url,
            settings.monitor.audit_table,
            "promote",
            reg.name,
            None,
            reg.version,
            "first registered version: no champion existed",
            rec.metrics,
            flow_run_id=flow_run.id,
            actor="training-flow",
            tracking_uri=settings.tracking_uri,
            schema=settings.warehouse.schema_name,
        )
    get_run_logger().info(
        "Registered %s version %s (run %s)%s",
        reg.name,
        reg.version,
        reg.run_id,
        f"; it is now '{reg.alias}'" if reg.alias else "; the champion alias is unchanged",
    )
    return reg
