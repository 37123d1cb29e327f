"""Carrying a decision out so that the registry and the audit trail agree (no Prefect).

Three rules, for every alias move a flow makes:

* **Audit first, then the alias.** :func:`promote_audited` writes the audit row before it
  moves ``champion``: an unreachable or read-only warehouse fails the step before anything
  moved. If the alias move then fails, the row is deleted again (a compensating write)
  unless the alias did move, so the two succeed or fail together.
* **Compare and set.** The promotion names the champion it was compared against
  (``expected``); if another version holds the alias right before the move, it raises
  :class:`ChampionChanged` and moves nothing.
* **Idempotent across task retries.** The training run of a flow run and step is tagged
  (``salesflow.flow_run_id``, ``salesflow.step``); :func:`registered_by_run` finds the version
  it registered, so a retried registration reuses it. A retried promotion or rejection
  that finds its own audit row (same flow run, action and version) does not write another.
"""

from __future__ import annotations

from typing import Any

from salesflow.config.settings import Settings
from salesflow.governance.lifecycle import (
    STATUS,
    Action,
    _tag,
    delete_audit,
    promote,
    read_audit,
    record_audit,
    reject,
    tag_last_action,
)
from salesflow.modelling.registry import RegisteredVersion, client, get_alias_version

FLOW_RUN_TAG = "salesflow.flow_run_id"
STEP_TAG = "salesflow.step"
EVALUATED_VERSION = "salesflow.evaluated_version"
REFIT_VERSION = "salesflow.refit_version"


class ChampionChanged(RuntimeError):
    """The champion moved after it was compared with the challenger: nothing was promoted."""


def current_champion(settings: Settings) -> str | None:
    """The version holding the champion alias, or None."""
    mv = get_alias_version(
        settings.tracking_uri, settings.model.name, settings.mlflow.champion_alias
    )
    return None if mv is None else str(mv.version)


def run_tags(flow_run_id: str | None, step: str) -> dict[str, str]:
    """The tags that let a retried registration find the version it already made."""
    return {STEP_TAG: step, **({FLOW_RUN_TAG: str(flow_run_id)} if flow_run_id else {})}


def registered_by_run(
    settings: Settings, flow_run_id: str | None, step: str
) -> RegisteredVersion | None:
    """The model version registered by ``step`` of flow run ``flow_run_id``, or None."""
    if not flow_run_id:
        return None
    c = client(settings.tracking_uri)
    exp = c.get_experiment_by_name(settings.mlflow.experiment)
    if exp is None:
        return None
    runs = c.search_runs(
        [exp.experiment_id],
        f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}' and tags.`{STEP_TAG}` = '{step}'",
    )
    name = settings.model.name
    for run in runs:
        for mv in c.search_model_versions(f"run_id = '{run.info.run_id}'"):
            if mv.name == name:
                return RegisteredVersion(
                    name, str(mv.version), run.info.run_id, None, settings.tracking_uri
                )
    return None


def _audit_args(settings: Settings) -> dict[str, Any]:
    return {
        "url": settings.warehouse_url,
        "table_name": settings.monitor.audit_table,
        "schema": settings.warehouse.schema_name,
    }


def _record(
    settings: Settings,
    action: Action,
    from_version: str | None,
    to_version: str,
    reason: str,
    metrics: dict[str, Any],
    flow_run_id: str | None,
    actor: str,
) -> dict[str, Any]:
    """One audit row of ``settings.model.name`` in the settings' warehouse, with their env."""
    return record_audit(
        action=action,
        model_name=settings.model.name,
        from_version=from_version,
        to_version=to_version,
        reason=reason,
        metrics=metrics,
        flow_run_id=flow_run_id,
        actor=actor,
        env=settings.env,
        **_audit_args(settings),
    )


def find_audit(
    settings: Settings, flow_run_id: str | None, action: str, version: str
) -> dict[str, Any] | None:
    """The audit row of ``action`` on ``version`` written by ``flow_run_id``, or None."""
    if not flow_run_id:
        return None
    a = _audit_args(settings)
    rows = read_audit(a["url"], a["table_name"], a["schema"], settings.model.name)
    hit = rows[
        (rows["flow_run_id"] == str(flow_run_id))
        & (rows["action"] == action)
        & (rows["to_version"] == str(version))
    ]
    return None if hit.empty else hit.iloc[-1].to_dict()


def _changed(settings: Settings, expected: str | None, current: str | None, version: str) -> str:
    name = settings.model.name
    was = f"version {expected}" if expected else "no champion"
    now = f"version {current}" if current else "no champion"
    return (
        f"the champion of {name!r} changed while this run compared version {version} with "
        f"{was}: it is now {now} (another run promoted or rolled back); nothing was "
        "promoted: retrain again to compare with the new champion"
    )


def promote_audited(
    settings: Settings,
    version: str,
    expected: str | None,
    reason: str,
    metrics: dict[str, Any],
    flow_run_id: str | None,
    actor: str,
) -> dict[str, str | None]:
    """Make ``version`` the champion if ``expected`` still is; audit row first.

    Returns ``{"from_version", "to_version"}``. Raises :class:`ChampionChanged` (nothing
    moved, no row) when the champion is no longer ``expected``; the audit write's error
    (nothing moved) when the warehouse cannot take the row.
    """
    version, uri, name = str(version), settings.tracking_uri, settings.model.name
    current = current_champion(settings)
    if current == version and (done := find_audit(settings, flow_run_id, "promote", version)):
        _tag(client(uri), name, version, {STATUS: "champion"})  # a retry after a partial move
        return {"from_version": done["from_version"], "to_version": version}
    if current != expected:
        raise ChampionChanged(_changed(settings, expected, current, version))
    row = _record(settings, "promote", current, version, reason, metrics, flow_run_id, actor)
    try:
        moved = promote(uri, name, version, settings.policy, settings.mlflow.champion_alias)
    except Exception:
        if current_champion(settings) != version:  # the move did not happen: undo the row
            delete_audit(event_id=row["event_id"], **_audit_args(settings))
        raise
    tag_last_action(uri, name, "promote", [current, version], row)
    return moved


def reject_audited(
    settings: Settings,
    version: str,
    champion_version: str | None,
    reason: str,
    metrics: dict[str, Any],
    flow_run_id: str | None,
    actor: str,
) -> None:
    """Audit row (once per flow run), then tag ``version`` rejected with ``reason``."""
    version, uri, name = str(version), settings.tracking_uri, settings.model.name
    row = find_audit(settings, flow_run_id, "reject", version)
    if row is None:
        row = _record(
            settings, "reject", champion_version, version, reason, metrics, flow_run_id, actor
        )
    reject(uri, name, version, reason)
    tag_last_action(uri, name, "reject", [version], row)


def tag_evaluated(settings: Settings, evaluated: str, refit: str, note: str) -> None:
    """Link the holdout-scored version and its refit both ways (MLflow version tags)."""
    c, name = client(settings.tracking_uri), settings.model.name
    _tag(
        c,
        name,
        str(evaluated),
        {STATUS: "evaluated", REFIT_VERSION: str(refit), "salesflow.note": note[:500]},
    )
    _tag(c, name, str(refit), {EVALUATED_VERSION: str(evaluated)})


__all__ = [
    "EVALUATED_VERSION",
    "FLOW_RUN_TAG",
    "REFIT_VERSION",
    "STEP_TAG",
    "ChampionChanged",
    "current_champion",
    "find_audit",
    "promote_audited",
    "registered_by_run",
    "reject_audited",
    "run_tags",
    "tag_evaluated",
]
