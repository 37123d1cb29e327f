"""The monitor flow: realized accuracy, drift, events that trigger retraining, rollback."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.run_names import run_name
from salesflow.config.settings import load_settings, settings_overrides
from salesflow.governance.policy import decide_rollback
from salesflow.modelling.report import monitor_summary
from salesflow.monitor.monitoring import is_degraded
from tasks.ingest import ingest_sales
from tasks.monitor import (
    check_drift,
    emit_monitor_events,
    measure_accuracy,
    roll_back_champion,
)
from tasks.preflight import check_data, check_run
from tasks.score import load_champion
from tasks.validate import validate_data


@flow(name="monitor-forecasts", flow_run_name=run_name("monitor-forecasts"), log_prints=True)
def monitor_flow(
    env: str | None = None,
    source: str | None = None,
    path: str | None = None,
    as_of: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure the champion on the actuals that arrived, check drift, emit events, and roll
    the champion back when it does clearly worse than the previous one."""
    settings = load_settings(env, **settings_overrides(source, path, as_of, overrides))
    check_run(settings, "monitor")
    model, identity = load_champion(settings)
    data = ingest_sales(settings.data)
    data = validate_data(data, settings.validation, settings.data.as_of, settings.model.horizon)
    check_data(settings, data, "monitor", model, identity["version"])
    cmp, joined = measure_accuracy(data, identity, settings)
    drift = check_drift(data, model, joined, settings, identity["version"])
    backtest = identity.get("backtest_wmae")
    degraded = bool(
        cmp.current_wmae is not None
        and backtest
        and is_degraded(cmp.current_wmae, backtest, settings.monitor)
    )
    events = emit_monitor_events(identity, drift, cmp, degraded, settings.env)
    decision = decide_rollback(
        identity["version"],
        cmp.current_wmae if cmp.current_wmae is not None else float("nan"),
        backtest if backtest else float("nan"),
        cmp.previous_version,
        cmp.previous_wmae,
        settings.policy,
    )
    moved = roll_back_champion(decision, settings) if decision.rollback else None
    create_markdown_artifact(
        key="monitor-summary",
        markdown=monitor_summary(identity, cmp, drift, degraded, events, decision),
        description="Realized accuracy vs backtest, drift, events, rollback",
    )
    return {
        "model_version": identity["version"],
        "realized_wmae": cmp.current_wmae,
        "backtest_wmae": backtest,
        "degraded": degraded,
        "drift": {k: r.detected for k, r in drift.items()},
        "drifted_columns": {
            k: [c.column for c in r.columns if c.drifted] for k, r in drift.items()
        },
        "events": events,
        "rolled_back": moved,
    }


if __name__ == "__main__":
    monitor_flow()
