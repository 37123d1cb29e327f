"""Retraining steps: score challenger and champion on the same holdout, decide, act."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run

from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from salesflow.governance.policy import Decision, decide
from salesflow.governance.promotion import (
    ChampionChanged,
    promote_audited,
    reject_audited,
    tag_evaluated,
)
from salesflow.governance.retraining import (
    Holdout,
    comparable_champion,
    compare_on_holdout,
    holdout_frame,
    split_holdout,
)
from salesflow.modelling.backtest import BacktestResult, fit_with
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.registry import ChampionNotFound, RegisteredVersion, load_forecaster
from salesflow.modelling.report import decision_markdown
from salesflow.modelling.training import Fitter
from tasks import TRANSIENT_IO_RETRIES


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


@task(
    name="load-current-champion",
    **TRANSIENT_IO_RETRIES,
    cache_policy=NO_CACHE,
)
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
    fitter: Fitter | None = None,
) -> Decision:
    """Both models forecast the same holdout rows; the pure policy decides. ``fitter``: on
    Dask, the forecasts are made shard by shard on the workers and a champion refit (one
    trained into the holdout) is fitted there."""
    hw = settings.backtest.holiday_weight
    predict = getattr(fitter, "predict", None)  # on Dask: shard by shard on the workers
    ch = holdout_frame(challenger, data, holdout, predict)
    cp = None
    if champion is not None:
        fair, note = comparable_champion(champion, holdout, fitter)
        if note:
            get_run_logger().info("Note: %s", note)
        cp = holdout_frame(fair, data, holdout, predict)
    ch_card, cp_card = compare_on_holdout(ch, cp, challenger_version, champion_version, hw)
    decision = decide(ch_card, cp_card, settings.policy)
    get_run_logger().info("Decision: %s (%s)", decision.action, decision.reason)
    return decision


@task(name="refit-on-all-data", cache_policy=NO_CACHE)
def refit_challenger(
    data: SalesData,
    challenger: GlobalForecaster,
    bt: BacktestResult,
    fitter: Fitter | None = None,
) -> GlobalForecaster:
    """The promoted configuration fitted on all the data, holdout included; its intervals
    come from the challenger's backtest (same configuration, data before the holdout).
    ``fitter``: on Dask (``compute.engine: dask``), as the challenger was."""
    model = fit_with(challenger.clone(), data, fitter).set_intervals(bt.frame)
    get_run_logger().info(
        "Refit on all data up to %s (the challenger stopped at %s) in %.1f s",
        model.trained_until_.date(),
        challenger.trained_until_.date(),
        model.fit_seconds_,
    )
    return model


def _carry_out(
    decision: Decision,
    reg: RegisteredVersion,
    refit: RegisteredVersion | None,
    expected: str | None,
    settings: Settings,
    figures: dict[str, Any],
) -> tuple[Decision, dict[str, str | None]]:
    """Promote (the refit when there is one) if the champion is still ``expected``; a
    champion that moved meanwhile turns the promotion into a rejection."""
    fr, actor = flow_run.id, "retrain-flow"
    if decision.action == "promote":
        target = refit or reg
        try:
            moved = promote_audited(
                settings, target.version, expected, decision.reason, figures, fr, actor
            )
        except ChampionChanged as exc:
            get_run_logger().warning("%s", exc)
            decision = replace(decision, action="reject", reason=str(exc))
        else:
            if refit is not None:
                note = f"holdout-scored; refit on all data as version {refit.version}"
                tag_evaluated(settings, reg.version, refit.version, note)
            return decision, moved
    reject_audited(settings, reg.version, expected, decision.reason, figures, fr, actor)
    if refit is not None:
        reject_audited(settings, refit.version, expected, decision.reason, figures, fr, actor)
    return decision, {"from_version": None, "to_version": None}


@task(
    name="apply-decision",
    **TRANSIENT_IO_RETRIES,
    cache_policy=NO_CACHE,
)
def apply_decision(
    decision: Decision,
    reg: RegisteredVersion,
    settings: Settings,
    expected_champion: str | None = None,
    refit: RegisteredVersion | None = None,
) -> dict[str, Any]:
    """Audit row first, then move the alias (promote: the refit becomes champion, if the
    champion is still ``expected_champion``) or tag the version rejected; Prefect event."""
    name = settings.model.name
    figures: dict[str, Any] = {"challenger": asdict(decision.challenger)}
    if decision.champion is not None:
        figures["champion"] = asdict(decision.champion)
    figures["evaluated"] = {"version": reg.version, "run_id": reg.run_id}
    if refit is not None:
        figures["refit"] = {"version": refit.version, "run_id": refit.run_id}
    decision, moved = _carry_out(decision, reg, refit, expected_champion, settings, figures)
    emit_event(
        event=f"salesflow.model.{'promoted' if decision.action == 'promote' else 'rejected'}",
        resource={"prefect.resource.id": f"salesflow.model.{name}", "prefect.resource.name": name},
        payload={
            **settings.provenance,
            "version": reg.version,
            "champion_version": moved["to_version"],  # the refit, when promoted
            "reason": decision.reason,
            **figures,
        },
    )
    create_markdown_artifact(
        key="promotion-decision",
        markdown=decision_markdown(decision, name, moved),
        description="Challenger vs champion on the same holdout",
    )
    return {"action": decision.action, "reason": decision.reason, **moved}
