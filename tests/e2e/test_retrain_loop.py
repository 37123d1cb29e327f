"""The retraining loop, run for real: drift events trigger the `retrain-forecaster/on-drift`
deployment on the session's Prefect server and worker (the `stack` of test_deployments.py).

The champion, the forecasts and the monitor run in this process, against the same server,
the worker's MLflow registry (its local dir) and its PostgreSQL warehouse; the retrain runs
on the worker, started by the deployment's event trigger.

Env precedence (issue #12): this process runs with ``SALESFLOW_ENV=dev`` and the worker with
``SALESFLOW_ENV=test`` (stack.py), while every flow here is called with ``env="scenario"`` and
the trigger passes the event's ``env``: the explicit env must win everywhere, so the drift
event says ``env: scenario`` and the triggered retrain registers ``salesflow-scenario``
versions tagged ``env: scenario`` (before the fix: ``env: dev``, then a retrain of
``salesflow-forecaster``).

What `concurrency_limit: {limit: 1, collision_strategy: CANCEL_NEW}` does in Prefect 3.8
(prefect/server/orchestration/core_policy.py, SecureFlowConcurrencySlots): the trigger
creates one Scheduled run per event, always; the limit acts when the worker proposes
Pending. A run that finds the slot taken is moved straight from Scheduled to Cancelled
("Deployment concurrency limit reached."), so it never starts. "A burst of events = one
retrain" therefore holds for events whose runs reach the worker while the first retrain
holds the slot (from Pending to its final state); a later event starts a new retrain.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .procs import Processes, log_tail
from .stack import Stack, client_for

pytestmark = pytest.mark.e2e

DEPLOYMENT = "retrain-forecaster/on-drift"
MODEL = "salesflow-scenario"  # configs/scenario.yaml
OTHER_MODEL = "salesflow-forecaster"  # configs/dev.yaml and test.yaml: must not be retrained
SHIFTED = {"temperature", "fuel_price", "cpi"}  # the scenario's covariate shift
AUDIT_TABLE = "model_audit"  # the worker's monitor.audit_table (configs/base.yaml default)
LOCK_TABLE = "model_locks"  # its lock table (configs/base.yaml default)
LIMIT_MESSAGE = "Deployment concurrency limit reached."  # Prefect's CANCEL_NEW state message
TRIGGER_TIMEOUT_S = 240  # event -> triggered run Completed
SETTLE_TIMEOUT_S = 90  # every triggered run created and final
BURST = 3  # events emitted at once
QUIET_S = 10  # after the burst's runs: no further run may appear


@dataclass(frozen=True)
class Scenario:
    stack: Stack
    tracking_uri: str  # the worker's MLflow registry
    deployment_id: uuid.UUID


@pytest.fixture(scope="module")
def scenario(stack: Stack, processes: Processes) -> Iterator[Scenario]:  # noqa: F811
    """This process set up like the worker: its server, registry and warehouse.

    The forecasts go to a table of their own: test_deployments.py checks that the session
    table holds exactly its rows. The scenario's audit rows are deleted afterwards.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    servers = [bg for bg in processes.started if bg.name == "prefect server"]
    assert len(servers) == 1, "the stack was set up twice (see _SessionFixturesOnce)"
    _clear_dead_leases(stack.pg_url)
    table = f"{stack.table}_scenario"
    with client_for(stack) as client:
        deployment_id = client.read_deployment_by_name(DEPLOYMENT).id
    with pytest.MonkeyPatch.context() as mp, temporary_settings({PREFECT_API_URL: stack.api_url}):
        for key in [k for k in os.environ if k.startswith("SALESFLOW_")]:
            mp.delenv(key)
        mp.setenv("SALESFLOW_ENV", "dev")  # outranked by every flow's env="scenario"
        mp.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(stack.local_dir))
        mp.setenv("SALESFLOW_WAREHOUSE_URL", stack.pg_url)
        mp.setenv("SALESFLOW_WAREHOUSE__TABLE", table)
        try:
            yield Scenario(stack, f"sqlite:///{stack.local_dir / 'mlflow.db'}", deployment_id)
        finally:
            # Send what the in-process flows still queue while the server is configured.
            EventsWorker.drain_all(timeout=10)
            APILogWorker.drain_all(timeout=10)
    _cleanup(stack, table)


def _clear_dead_leases(pg_url: str) -> None:
    """Delete the scenario model's lock row when its holder is a process of this host that
    no longer exists (a test session killed mid-retrain leaves its lease for 2 hours; the
    lock table is shared by every session). A live holder's lease is left alone."""
    import re
    import socket

    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            if not sa.inspect(conn).has_table(LOCK_TABLE):
                return
            rows = conn.execute(
                sa.text(f"SELECT holder FROM {LOCK_TABLE} WHERE model_name = :m"), {"m": MODEL}
            ).all()
            for (holder,) in rows:
                found = re.search(r"@(\S+) pid (\d+)$", holder)
                if found is None or found[1] != socket.gethostname():
                    continue
                if not os.path.exists(f"/proc/{found[2]}"):
                    conn.execute(
                        sa.text(f"DELETE FROM {LOCK_TABLE} WHERE model_name = :m AND holder = :h"),
                        {"m": MODEL, "h": holder},
                    )
    finally:
        engine.dispose()


def _cleanup(st: Stack, table: str) -> None:
    """Drop the forecasts table; delete the audit rows of the scenario model written by runs
    of this session's server (the audit table is shared by every session)."""
    import sqlalchemy as sa
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    not_scheduled = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED]))
    )
    with client_for(st) as client:
        run_ids = [str(r.id) for r in client.read_flow_runs(flow_run_filter=not_scheduled)]
    delete = sa.text(
        f"DELETE FROM {AUDIT_TABLE} WHERE model_name = :model AND flow_run_id IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    engine = sa.create_engine(st.pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            if run_ids and sa.inspect(conn).has_table(AUDIT_TABLE):
                conn.execute(delete, {"model": MODEL, "ids": run_ids})
    finally:
        engine.dispose()


# --- reading the server ---------------------------------------------------------------------


def _triggered_runs(client: Any, deployment_id: uuid.UUID, exclude: set = frozenset()) -> list:
    """Runs of the deployment that its event trigger created (idempotency key of an
    automation action), oldest first, except those in ``exclude``."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        limit=200,
    )
    found = [
        r
        for r in runs
        if (r.idempotency_key or "").startswith("automation ") and r.id not in exclude
    ]
    return sorted(found, key=lambda r: r.created)


def _describe(client: Any, runs: list) -> str:
    """One line per run: name, states it went through, last message."""
    lines = []
    for r in runs:
        states = client.read_flow_run_states(r.id)
        history = " -> ".join(s.name for s in sorted(states, key=lambda s: s.timestamp))
        msg = r.state.message if r.state else ""
        lines.append(f"  {r.name} ({str(r.id)[:8]}): {history}; {msg!r}; {r.parameters}")
    return "\n".join(lines) or "  (none)"


def _fail(client: Any, st: Stack, what: str, runs: list) -> None:
    pytest.fail(
        f"{what}\nruns of {DEPLOYMENT}:\n{_describe(client, runs)}\n"
        f"--- worker log\n{log_tail(st.worker.log, 60)}",
        pytrace=False,
    )


def _wait_settled(
    client: Any, sc: Scenario, exclude: set, expected: int, timeout: float, min_wait: float = 0
) -> list:
    """The triggered runs not in ``exclude`` once ``expected`` exist and all are final (or at
    ``timeout``), polled every second for at least ``min_wait`` seconds."""
    start = time.monotonic()
    while True:
        runs = _triggered_runs(client, sc.deployment_id, exclude)
        settled = len(runs) >= expected and all(r.state and r.state.is_final() for r in runs)
        waited = time.monotonic() - start
        if (settled and waited >= min_wait) or waited > timeout:
            return runs
        time.sleep(1)


def _read_events(client: Any, name: str, ids: set[uuid.UUID] | None = None) -> list:
    """Events ``name`` the server stored (all, or those with ``ids``), waiting up to 30 s:
    the server persists received events in batches."""
    from prefect.events.filters import EventFilter, EventIDFilter, EventNameFilter

    deadline = time.monotonic() + 30
    while True:
        flt = EventFilter(
            event=EventNameFilter(name=[name]),
            id=EventIDFilter(id=sorted(ids) if ids else []),
        )
        events = client.read_events(filter=flt, limit=50).events
        if (len(events) >= len(ids) if ids else events) or time.monotonic() > deadline:
            return events
        time.sleep(1)


def _decision_events(client: Any, flow_run_id: uuid.UUID) -> list:
    """The promoted / rejected events the flow run emitted, waiting up to 30 s."""
    from prefect.events.filters import EventFilter, EventNameFilter

    names = ["salesflow.model.promoted", "salesflow.model.rejected"]
    related = f"prefect.flow-run.{flow_run_id}"
    deadline = time.monotonic() + 30
    while True:
        flt = EventFilter(event=EventNameFilter(name=names))
        events = client.read_events(filter=flt, limit=50).events
        mine = [e for e in events if any(r.id == related for r in e.related)]
        if mine or time.monotonic() > deadline:
            return mine
        time.sleep(1)


def _versions(tracking_uri: str, name: str) -> dict[str, dict[str, str]]:
    """Version -> tags of every version of the registered model ``name``."""
    from salesflow.modelling.registry import client

    found = client(tracking_uri).search_model_versions(f"name = '{name}'")
    return {str(mv.version): dict(mv.tags) for mv in found}


# --- tests ------------------------------------------------------------------------------------


def test_drift_event_triggers_retrain_that_promotes(
    scenario: Scenario, e2e_timings: dict[str, float]
):
    """Champion before the drift, forecasts, monitor -> drift events -> the trigger's retrain
    on the worker completes and promotes the challenger (champion 2, previous 1, audited)."""
    from flows.batch_forecast import batch_forecast_flow
    from flows.monitor import monitor_flow
    from flows.training import training_flow
    from salesflow.governance.lifecycle import read_audit
    from salesflow.modelling.registry import get_alias_version

    sc = scenario
    t0 = time.perf_counter()
    training_flow(env="scenario", as_of="2012-04-27")
    e2e_timings["retrain loop: training flow (in-process)"] = time.perf_counter() - t0
    champion = get_alias_version(sc.tracking_uri, MODEL, "champion")
    assert champion is not None and str(champion.version) == "1"
    assert champion.tags["env"] == "scenario"  # not this process's SALESFLOW_ENV=dev
    assert champion.tags["model_name"] == MODEL
    before_versions = {m: _versions(sc.tracking_uri, m) for m in (MODEL, OTHER_MODEL)}

    t0 = time.perf_counter()
    batch_forecast_flow(env="scenario", as_of="2012-07-27")
    e2e_timings["retrain loop: batch forecast flow (in-process)"] = time.perf_counter() - t0

    with client_for(sc.stack) as client:
        before = {r.id for r in _triggered_runs(client, sc.deployment_id)}
        t0 = time.perf_counter()
        out = monitor_flow(env="scenario")
        emitted = time.perf_counter()
        e2e_timings["retrain loop: monitor flow (in-process)"] = emitted - t0

        assert out["drift"]["feature"], out["drifted_columns"]
        assert set(out["drifted_columns"]["feature"]) >= SHIFTED
        assert "salesflow.drift.detected" in out["events"], out["events"]
        drift_events = _read_events(client, "salesflow.drift.detected")
        assert drift_events, "the drift event did not reach the server"
        ev = drift_events[0]
        assert ev.resource.id == f"salesflow.model.{MODEL}"
        assert (ev.payload["env"], ev.payload["model_name"]) == ("scenario", MODEL)

        # The trigger's run on the worker: wait for Completed, stop early on a failure.
        deadline = time.monotonic() + TRIGGER_TIMEOUT_S
        while True:
            runs = _triggered_runs(client, sc.deployment_id, before)
            done = [r for r in runs if r.state and r.state.is_completed()]
            bad = [r for r in runs if r.state and (r.state.is_failed() or r.state.is_crashed())]
            if bad:
                _fail(client, sc.stack, "a triggered retrain run failed", runs)
            if done:
                break
            if time.monotonic() > deadline:
                _fail(
                    client,
                    sc.stack,
                    f"no triggered retrain run completed {TRIGGER_TIMEOUT_S} s after the "
                    "monitor's events",
                    runs,
                )
            time.sleep(1)
        e2e_timings["retrain loop: events -> triggered retrain Completed"] = (
            time.perf_counter() - emitted
        )
        retrain = done[0]

        # One run per event (drift + degradation); the one that found the slot taken is
        # cancelled. Waiting for all of them keeps them out of the next test.
        runs = _wait_settled(client, sc, before, len(out["events"]), SETTLE_TIMEOUT_S)
        states = [r.state.name for r in runs]
        print(f"runs of {DEPLOYMENT} after the monitor's events:\n{_describe(client, runs)}")
        assert states.count("Completed") == 1, _describe(client, runs)
        assert len(runs) == len(out["events"]), _describe(client, runs)
        decided = _decision_events(client, retrain.id)
        assert decided, "the triggered retrain emitted no promoted/rejected event"
        assert all(
            (e.payload["env"], e.payload["model_name"]) == ("scenario", MODEL) for e in decided
        ), [e.payload for e in decided]

    assert retrain.parameters["env"] == "scenario"
    assert retrain.parameters["reason"] in {
        f"{name} for salesflow.model.{MODEL}" for name in out["events"]
    }
    # The retrain (worker: SALESFLOW_ENV=test) registered the scenario's model, tagged with
    # the env it ran on, and left the other model alone.
    new = {
        v: tags
        for v, tags in _versions(sc.tracking_uri, MODEL).items()
        if v not in before_versions[MODEL]
    }
    assert new, f"the triggered retrain registered no version of {MODEL}"
    assert all((t["env"], t["model_name"]) == ("scenario", MODEL) for t in new.values()), new
    assert set(_versions(sc.tracking_uri, OTHER_MODEL)) == set(before_versions[OTHER_MODEL])
    champion = get_alias_version(sc.tracking_uri, MODEL, "champion")
    previous = get_alias_version(sc.tracking_uri, MODEL, "previous")
    # A promotion registers the holdout-scored challenger (2) and its refit on all the
    # data (3); the refit becomes champion.
    assert champion is not None and str(champion.version) == "3"
    assert previous is not None and str(previous.version) == "1"

    audit = read_audit(sc.stack.pg_url, AUDIT_TABLE, model_name=MODEL)
    rows = audit[audit["flow_run_id"] == str(retrain.id)]
    assert len(rows) == 1, audit.tail(5).to_string()
    row = rows.iloc[0]
    assert (row["action"], row["from_version"], row["to_version"], row["actor"]) == (
        "promote",
        "1",
        "3",
        "retrain-flow",
    )


def _emit_burst(api_url: str, n: int) -> set[uuid.UUID]:
    """``n`` drift events sent at once over one events connection; closing it flushes them."""
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    events = [
        Event(
            event="salesflow.drift.detected",
            resource={
                "prefect.resource.id": f"salesflow.model.{MODEL}",
                "prefect.resource.name": MODEL,
            },
            payload={"env": "scenario", "burst": i},
        )
        for i in range(n)
    ]

    async def send() -> None:
        async with PrefectEventsClient(api_url=api_url) as client:
            for event in events:
                await client.emit(event)

    asyncio.run(send())
    return {e.id for e in events}


def test_burst_of_events_runs_one_retrain(scenario: Scenario, e2e_timings: dict[str, float]):
    """Three drift events at once: the trigger creates a run for each; CANCEL_NEW lets the
    first run and cancels the others before they start; the retrain's own event
    (salesflow.model.promoted / rejected) triggers nothing more."""
    sc = scenario
    with client_for(sc.stack) as client:
        earlier = _triggered_runs(client, sc.deployment_id)
        assert all(r.state and r.state.is_final() for r in earlier), _describe(client, earlier)
        before = {r.id for r in earlier}
        t0 = time.perf_counter()
        ids = _emit_burst(sc.stack.api_url, BURST)
        got = _read_events(client, "salesflow.drift.detected", ids)
        assert {e.id for e in got} == ids, "not every event of the burst reached the server"

        runs = _wait_settled(client, sc, before, BURST, SETTLE_TIMEOUT_S)
        e2e_timings[f"retrain loop: burst of {BURST} events -> runs final"] = (
            time.perf_counter() - t0
        )
        report = _describe(client, runs)
        print(f"runs of {DEPLOYMENT} after {BURST} events at once:\n{report}")
        assert len(runs) == BURST, f"one run per event expected:\n{report}"
        assert all(r.parameters["env"] == "scenario" for r in runs), report
        completed = [r for r in runs if r.state.is_completed()]
        cancelled = [r for r in runs if r.state.is_cancelled()]
        assert len(completed) == 1 and len(cancelled) == BURST - 1, report
        assert "RUNNING" in {s.type.value for s in client.read_flow_run_states(completed[0].id)}
        for r in cancelled:  # cancelled while Scheduled: never Pending, never Running
            assert r.state.message == LIMIT_MESSAGE, report
            states = {s.type.value for s in client.read_flow_run_states(r.id)}
            assert states == {"SCHEDULED", "CANCELLED"}, f"a cancelled run started:\n{report}"

        # Longer than event -> run (2.5-6.6 s): no run follows the retrain's own event.
        time.sleep(QUIET_S)
        after = _triggered_runs(client, sc.deployment_id, before)
        assert len(after) == BURST, f"a run appeared after the burst:\n{_describe(client, after)}"
