"""Retraining steps: score challenger and champion on the same holdout, decide, act."""

from __future__ import annotations

from dataclasses import asdict

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run

from salesflow.lifecycle import promote, record_audit, reject
from salesflow.model import GlobalForecaster
from salesflow.policy import Decision, decide
from salesflow.registry import ChampionNotFound, RegisteredVersion, load_forecaster
from salesflow.report import decision_markdown
from salesflow.retraining import (
    Holdout,
    comparable_champion,
    compare_on_holdout,
    holdout_frame,
    split_holdout,
)
from salesflow.schema import SalesData
from salesflow.settings import Settings


@task(name="split-holdout", cache_policy=NO_CACHE)
def make_holdout(data: SalesData, settings: Settings) -> Holdout:
    """The last policy.holdout_periods periods, kept out of the challenger's training."""
    h = split_holdout(data, settings.policy.holdout_periods)
    get_run_logger().info(
        "Holdout: %d periods from %s; the challenger trains on data up to %s",
        h.periods,
        h.origin.date(),
        h.train.last_date.date(),
    )
    return h


@task(name="load-current-champion", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def load_current_champion(settings: Settings) -> tuple[GlobalForecaster | None, str | None]:
    """The champion model and version, or (None, None) when there is none yet."""
    try:
        model, mv = load_forecaster(
            settings.tracking_uri, settings.model.name, settings.mlflow.champion_alias
        )
    except ChampionNotFound:
        get_run_logger().info("No champion yet: the challenger only has to pass the guardrails")
        return None, None
    return model, str(mv.version)


@task(name="decide-promotion", cache_policy=NO_CACHE)
def decide_promotion(
    challenger: GlobalForecaster,
    challenger_version: str,
    champion: GlobalForecaster | None,
    champion_version: str | None,
    data: SalesData,
    holdout: Holdout,
    settings: Settings,
) -> Decision:
    """Both models forecast the same holdout rows; the pure policy decides."""
    hw = settings.backtest.holiday_weight
    ch = holdout_frame(challenger, data, holdout)
    cp = None
    if champion is not None:
        fair, note = comparable_champion(champion, holdout)
        if note:
            get_run_logger().info("Note: %s", note)
        cp = holdout_frame(fair, data, holdout)
    ch_card, cp_card = compare_on_holdout(ch, cp, challenger_version, champion_version, hw)
    decision = decide(ch_card, cp_card, settings.policy)
    get_run_logger().info("Decision: %s (%s)", decision.action, decision.reason)
    return decision


@task(name="apply-decision", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def apply_decision(decision: Decision, reg: RegisteredVersion, settings: Settings) -> dict:
    """Move the alias (promote) or tag the version (reject); audit row; Prefect event."""
    name, uri = settings.model.name, settings.tracking_uri
    moved: dict[str, str | None] = {"from_version": None, "to_version": None}
    if decision.action == "promote":
        moved = promote(uri, name, reg.version, settings.policy, settings.mlflow.champion_alias)
    else:
        reject(uri, name, reg.version, decision.reason)
    figures = {"challenger": asdict(decision.challenger)}
    if decision.champion is not None:
        figures["champion"] = asdict(decision.champion)
    record_audit(
        settings.warehouse_url,
        settings.monitor.audit_table,
        decision.action,
        name,
        moved["from_version"] if decision.action == "promote" else None,
        reg.version,
        decision.reason,
        figures,
        flow_run_id=flow_run.id,
        actor="retrain-flow",
        tracking_uri=uri,
        schema=settings.warehouse.schema_name,
    )
    emit_event(
        event=f"salesflow.model.{'promoted' if decision.action == 'promote' else 'rejected'}",
        resource={"prefect.resource.id": f"salesflow.model.{name}", "prefect.resource.name": name},
        payload={
            **settings.provenance,
            "version": reg.version,
            "reason": decision.reason,
            **figures,
        },
    )
    create_markdown_artifact(
        key="promotion-decision",
        markdown=decision_markdown(decision, name, moved),
        description="Challenger vs champion on the same holdout",
    )
    return moved
