"""Monitoring steps: realized accuracy, drift checks, and the verdict's effects."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run

from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from salesflow.governance.lifecycle import check_audit_writable, record_audit, rollback
from salesflow.governance.policy import RollbackDecision
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.registry import get_alias_version
from salesflow.modelling.report import report_links
from salesflow.monitor.drift import (
    DriftResult,
    feature_drift,
    prediction_drift,
    run_report_dir,
    save_report_html,
    target_drift,
)
from salesflow.monitor.loop import RealizedComparison, compare_realized
from salesflow.monitor.monitoring import join_actuals, realized_accuracy, write_accuracy
from salesflow.storage.warehouse import read_forecasts
from tasks import TRANSIENT_IO_RETRIES


@task(
    name="measure-accuracy",
    **TRANSIENT_IO_RETRIES,
    cache_policy=NO_CACHE,
)
def measure_accuracy(
    data: SalesData, identity: dict[str, Any], settings: Settings
) -> tuple[RealizedComparison, pd.DataFrame]:
    """Join arrived actuals with the forecasts made for them; store realized accuracy per
    model version, origin and horizon; compare champion and previous on the same rows."""
    log = get_run_logger()
    w = settings.warehouse
    fc = read_forecasts(
        settings.warehouse_url, table=w.table, schema=w.schema_name, model_name=identity["name"]
    )
    joined = join_actuals(fc, data.history)
    if joined.empty:
        log.warning("No forecast has an actual yet: nothing to measure")
        return compare_realized(joined, identity["version"], None, 1), joined
    acc = realized_accuracy(joined, settings.backtest.holiday_weight)
    write_accuracy(settings.warehouse_url, acc, settings.monitor.accuracy_table)
    prev = get_alias_version(
        settings.tracking_uri, identity["name"], settings.policy.previous_alias
    )
    cmp = compare_realized(
        joined,
        identity["version"],
        str(prev.version) if prev else None,
        settings.monitor.drift.current_periods,
        settings.backtest.holiday_weight,
    )
    log.info(
        "Realized WMAE of version %s on %d rows (%s .. %s): %s; previous version %s: %s",
        cmp.current_version,
        cmp.n_rows,
        cmp.window_start,
        cmp.window_end,
        _f(cmp.current_wmae),
        cmp.previous_version or "-",
        _f(cmp.previous_wmae),
    )
    return cmp, joined


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.1f}"


def write_monitor_summary(
    folder: Path,
    results: dict[str, DriftResult],
    paths: dict[str, Path],
    data_date: Any,
    flow_run_id: str | None,
    champion_version: str | None,
) -> Path:
    """``summary.json`` next to a monitor run's HTML reports: per kind the verdict, drifted
    columns and share, and the report's file name; the data date, run id, champion version."""
    drift = {
        kind: {
            "detected": bool(r.detected),
            "n_drifted": int(r.n_drifted),
            "n_columns": len(r.columns),
            "share_drifted": float(r.share_drifted),
            "drifted_columns": r.drifted_columns,
            "report": paths[kind].name if kind in paths else None,
        }
        for kind, r in results.items()
    }
    summary = {
        "written_at": dt.datetime.now(dt.UTC).isoformat(),
        "data_date": pd.Timestamp(data_date).strftime("%Y-%m-%d"),
        "flow_run_id": flow_run_id,
        "champion_version": champion_version,
        "drift": drift,
    }
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "summary.json"
    out.write_text(json.dumps(summary, indent=2))
    return out


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(
    data: SalesData,
    model: GlobalForecaster,
    joined: pd.DataFrame,
    settings: Settings,
    champion_version: str | None = None,
) -> dict[str, DriftResult]:
    """Evidently checks: features and target (champion's training window vs the latest
    window) and predictions (backtest forecasts vs the latest forecasts). Saves HTML and a
    ``summary.json`` (champion version: given, else looked up by alias) for the dashboard."""
    cfg, log = settings.monitor.drift, get_run_logger()
    results: dict[str, DriftResult] = {}
    folder = run_report_dir(
        settings.local_dir / settings.monitor.report_dir, data.last_date, flow_run.id
    )
    paths: dict[str, Path] = {}
    for kind, (res, snap) in {
        "feature": feature_drift(data, model.trained_until_, cfg),
        "target": target_drift(data, model.trained_until_, cfg),
    }.items():
        results[kind] = res
        paths[kind] = save_report_html(snap, folder / f"{kind}-drift.html")
        log.info(
            "%s drift: %d of %d columns drifted (%.0f%%) -> %s; report %s",
            kind.capitalize(),
            res.n_drifted,
            len(res.columns),
            100 * res.share_drifted,
            "DRIFT" if res.detected else "no drift",
            paths[kind],
        )
    ref = getattr(model, "reference_forecasts_", None)
    if ref is not None and not joined.empty:
        cur = joined.rename(columns={"target_date": "ds"})
        res, snap = prediction_drift(ref, cur, cfg)
        results["prediction"] = res
        paths["prediction"] = save_report_html(snap, folder / "prediction-drift.html")
    if champion_version is None:
        mv = get_alias_version(
            settings.tracking_uri, settings.model.name, settings.mlflow.champion_alias
        )
        champion_version = str(mv.version) if mv else None
    write_monitor_summary(folder, results, paths, data.last_date, flow_run.id, champion_version)
    create_markdown_artifact(
        key="drift-summary",
        markdown="\n\n".join([*(r.to_markdown() for r in results.values()), report_links(paths)]),
        description="Evidently drift checks: what moved, the tests, links to this run's reports",
    )
    return results


@task(name="emit-monitor-events", cache_policy=NO_CACHE)
def emit_monitor_events(
    identity: dict[str, Any],
    drift: dict[str, DriftResult],
    cmp: RealizedComparison,
    degraded: bool,
    env: str,
) -> list[str]:
    """Prefect events that trigger retraining: drift detected, performance degraded.

    The payload carries ``env`` (the env these settings were loaded for) and ``model_name``,
    so the triggered retrain runs on the same configuration and model."""
    name = identity["name"]
    origin = {"env": env, "model_name": name}
    resource = {
        "prefect.resource.id": f"salesflow.model.{name}",
        "prefect.resource.name": name,
        "salesflow.model.version": identity["version"],
    }
    sent = []
    # Prediction drift is reported, not acted on: the backtest forecasts it compares with
    # cover other calendar weeks, so it mixes seasonality into the score.
    drifted = {k: r.to_payload() for k, r in drift.items() if r.detected and k != "prediction"}
    if drifted:
        payload = {**origin, "version": identity["version"], **drifted}
        emit_event(event="salesflow.drift.detected", resource=resource, payload=payload)
        sent.append("salesflow.drift.detected")
    if degraded:
        payload = {
            **origin,
            "version": identity["version"],
            "realized_wmae": cmp.current_wmae,
            "backtest_wmae": identity.get("backtest_wmae"),
            "rows": cmp.n_rows,
            "window": [cmp.window_start, cmp.window_end],
        }
        emit_event(event="salesflow.performance.degraded", resource=resource, payload=payload)
        sent.append("salesflow.performance.degraded")
    get_run_logger().info("Events emitted: %s", ", ".join(sent) or "none")
    return sent


@task(
    name="roll-back-champion",
    **TRANSIENT_IO_RETRIES,
    cache_policy=NO_CACHE,
)
def roll_back_champion(decision: RollbackDecision, settings: Settings) -> dict:
    """Point the champion alias back at the previous version; audit; event.

    The warehouse must be able to take the audit row before the alias moves."""
    name = settings.model.name
    w = settings.warehouse
    check_audit_writable(settings.warehouse_url, settings.monitor.audit_table, w.schema_name)
    moved = rollback(
        settings.tracking_uri,
        name,
        decision.target_version,
        settings.policy,
        settings.mlflow.champion_alias,
    )
    record_audit(
        settings.warehouse_url,
        settings.monitor.audit_table,
        "rollback",
        name,
        moved["from_version"],
        moved["to_version"],
        decision.reason,
        {},
        flow_run_id=flow_run.id,
        actor="monitor-flow",
        tracking_uri=settings.tracking_uri,
        schema=w.schema_name,
        env=settings.env,
    )
    emit_event(
        event="salesflow.model.rolled_back",
        resource={"prefect.resource.id": f"salesflow.model.{name}", "prefect.resource.name": name},
        payload={**moved, "reason": decision.reason, **settings.provenance},
    )
    get_run_logger().warning(
        "Rolled back %s from version %s to %s: %s",
        name,
        moved["from_version"],
        moved["to_version"],
        decision.reason,
    )
    return moved
