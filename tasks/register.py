"""Registration steps: log the run to MLflow, register the version (once per flow run and
step, even when the task is retried), and judge whether it becomes the first champion."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from salesflow.governance.policy import decide_first_champion
from salesflow.governance.promotion import (
    current_champion,
    promote_audited,
    registered_by_run,
    reject_audited,
    run_tags,
)
from salesflow.governance.retraining import backtest_scorecard
from salesflow.modelling import plots
from salesflow.modelling.backtest import BacktestResult
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.registry import RegisteredVersion, log_and_register
from salesflow.modelling.training import example_input, run_record
from tasks import TRANSIENT_IO_RETRIES


@task(
    name="register-model",
    **TRANSIENT_IO_RETRIES,
    cache_policy=NO_CACHE,
)
def register_model(
    model: GlobalForecaster,
    data: SalesData,
    bt: BacktestResult,
    settings: Settings,
    step: str = "train",
    extra_tags: dict[str, str] | None = None,
) -> RegisteredVersion:
    """Log params, metrics, plots and the model; register it (no alias: the flow decides).

    The run is tagged with the flow run id and ``step``; a retry of this task (or of the
    same flow run) reuses the version already registered instead of adding a duplicate.
    """
    log = get_run_logger()
    if (done := registered_by_run(settings, flow_run.id, step)) is not None:
        log.info("Version %s was registered by this flow run's %r step: reused", done.version, step)
        return done
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    rec = run_record(model, data, bt, settings)
    rec.tags.update({**run_tags(flow_run.id, step), **(extra_tags or {})})
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
            set_alias_if_missing=False,
        )
    finally:
        for fig in rec.figures.values():
            plots.close(fig)
    log.info("Registered %s version %s (run %s)", reg.name, reg.version, reg.run_id)
    return reg


@task(
    name="gate-first-champion",
    **TRANSIENT_IO_RETRIES,
    cache_policy=NO_CACHE,
)
def gate_first_champion(
    reg: RegisteredVersion,
    bt: BacktestResult,
    settings: Settings,
    force_champion: bool = False,
    actor: str = "training-flow",
    force_reason: str | None = None,
) -> dict[str, Any]:
    """Make ``reg`` the first champion only if its own backtest passes the policy's
    guardrails; else tag it rejected. ``force_champion`` promotes it anyway (audited with
    ``actor`` and ``force_reason``), also over an existing champion. Audit row first."""
    log, fr = get_run_logger(), flow_run.id
    card = backtest_scorecard(bt.scored, reg.version, settings.backtest.holiday_weight)
    decision = decide_first_champion(card, settings.policy)
    metrics = {"backtest": asdict(card), "run_id": reg.run_id, "env": settings.env}
    current = current_champion(settings)
    if force_champion:
        why = force_reason or "no reason given"
        reason = f"forced by {actor}: {why} (policy: {decision.action}: {decision.reason})"
        moved = promote_audited(
            settings, reg.version, current, reason, {**metrics, "forced": True}, fr, actor
        )
        log.warning("Version %s is champion by force: %s", reg.version, reason)
        return {"action": "promote", "forced": True, "reason": reason, **moved}
    if current is not None and current != reg.version:
        reason = f"version {current} is the champion: compare with it by salesflow retrain"
        log.info("Champion alias unchanged: %s", reason)
        return {
            "action": "none",
            "forced": False,
            "reason": reason,
            "from_version": current,
            "to_version": current,
        }
    if decision.promote:
        moved = promote_audited(settings, reg.version, None, decision.reason, metrics, fr, actor)
        log.info("Version %s is the first champion: %s", reg.version, decision.reason)
        return {"action": "promote", "forced": False, "reason": decision.reason, **moved}
    reject_audited(settings, reg.version, None, decision.reason, metrics, fr, actor)
    log.warning("Version %s rejected, no champion: %s", reg.version, decision.reason)
    return {
        "action": "reject",
        "forced": False,
        "reason": decision.reason,
        "from_version": None,
        "to_version": None,
    }
