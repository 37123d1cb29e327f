"""The production profile of issue #16, run for real on this machine (prod_stack.py).

Prefect server on PostgreSQL, ``mlflow server`` (PostgreSQL backend store, proxied
artifacts), warehouse in PostgreSQL, a process worker with ``SALESFLOW_ENV=prod``: deploy ->
training run -> batch forecast on the worker (champion over HTTP) -> monitor -> drift event
-> triggered retrain -> promotion; then faults: the MLflow server down during a forecast,
the Prefect server restarted while a forecast is in flight. One stack for the module.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .procs import Processes, log_tail
from .prod_stack import MODEL, ProdStack, build_stack, drop_database

pytestmark = pytest.mark.e2e

TRAIN_AS_OF = "2012-04-27"  # before the scenario's drift (2012-05-04)
FORECAST_AS_OF = "2012-07-27"
HORIZON = 13
TRIGGER_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def prod(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory, e2e_timings: dict[str, float]
) -> Iterator[ProdStack]:
    """The stack, deployed, with its worker; stopped and its databases dropped at the end."""
    procs = Processes()
    st = build_stack(tmp_path_factory.mktemp("prod"), procs)
    t0 = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            prefect = pool.submit(st.start_prefect)
            mlflow = pool.submit(st.start_mlflow)
            e2e_timings["prod: prefect server (PostgreSQL) -> /api/health"] = prefect.result()
            e2e_timings["prod: mlflow server (PostgreSQL) -> /health"] = mlflow.result()
        t1 = time.perf_counter()
        st.deploy()
        e2e_timings["prod: work-pool create + deploy --all"] = time.perf_counter() - t1
        st.start_worker()
        e2e_timings["prod: stack up"] = time.perf_counter() - t0
        yield st
    finally:
        for bg in sorted(reversed(procs.started), key=lambda b: b.name != "prefect worker"):
            e2e_timings[f"prod: stop {bg.name}"] = bg.stop()
        for db in st.dbs.values():
            drop_database(db)


def _mlflow_rows(st: ProdStack, sql: str) -> list[tuple]:
    import sqlalchemy as sa

    engine = sa.create_engine(st.mlflow_db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def _rows_per_origin(st: ProdStack) -> dict[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(st.warehouse_url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("sales_forecasts"):
                return {}
            got = conn.exec_driver_sql(
                "SELECT forecast_origin, count(*) FROM sales_forecasts GROUP BY 1"
            )
            return {str(o)[:10]: n for o, n in got}
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def trained(prod: ProdStack, e2e_timings: dict[str, float]) -> Any:
    t0 = time.perf_counter()
    run = prod.run("train-forecaster/manual", as_of=TRAIN_AS_OF)
    e2e_timings["prod: train-forecaster/manual"] = time.perf_counter() - t0
    assert run.state.is_completed(), prod.describe(run)
    return run


@pytest.fixture(scope="module")
def forecasted(prod: ProdStack, trained: Any, e2e_timings: dict[str, float]) -> Any:
    t0 = time.perf_counter()
    run = prod.run("batch-forecast/weekly", as_of=FORECAST_AS_OF)
    e2e_timings["prod: batch-forecast/weekly"] = time.perf_counter() - t0
    assert run.state.is_completed(), prod.describe(run)
    return run


def test_training_registers_through_the_mlflow_server(prod: ProdStack, trained: Any):
    """The training run on the worker logs and registers over HTTP: the registry rows are in
    the MLflow PostgreSQL database, the artifacts in the server's proxied store."""
    from salesflow.modelling.registry import client, get_alias_version

    mv = get_alias_version(prod.tracking_uri, MODEL, "champion")
    assert mv is not None and str(mv.version) == "1", prod.describe(trained)
    assert mv.tags["env"] == "prod"
    c = client(prod.tracking_uri)
    run = c.get_run(mv.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    if mv.source.startswith("models:/m-"):  # MLflow 3: the version points at a logged model
        logged = c.get_logged_model(mv.source.removeprefix("models:/"))
        location = logged.artifact_location
    else:
        location = mv.source
    assert location.startswith("mlflow-artifacts:"), location
    assert any(prod.artifacts_dir.rglob("MLmodel")), "no model in the proxied artifact store"
    assert _mlflow_rows(prod, "SELECT name, version FROM model_versions") == [(MODEL, 1)]
    aliases = _mlflow_rows(prod, "SELECT name, alias, version FROM registered_model_aliases")
    assert aliases == [(MODEL, "champion", 1)]


def test_batch_forecast_on_the_worker_writes_the_champion(prod: ProdStack, forecasted: Any):
    """The forecast run loads the champion over HTTP and writes series x horizon rows of
    version 1 to the PostgreSQL warehouse."""
    from salesflow.storage.warehouse import read_forecasts

    rows = read_forecasts(prod.warehouse_url, table="sales_forecasts")
    assert len(rows), prod.describe(forecasted)
    assert set(rows["model_name"]) == {MODEL}
    assert set(rows["model_version"]) == {"1"}
    assert set(rows["flow_run_id"]) == {str(forecasted.id)}
    assert (rows.groupby("unique_id").size() == HORIZON).all()
    assert len(rows) == rows["unique_id"].nunique() * HORIZON
    assert set(rows["forecast_origin"].dt.date.astype(str)) == {"2012-08-03"}
    assert "Loaded salesflow-forecaster version 1" in prod.logs(forecasted.id)


def _triggered(st: ProdStack) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    dep = st.deployment_ids["retrain-forecaster/on-drift"]
    with st.client() as c:
        runs = c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep])), limit=50
        )
    return [r for r in runs if (r.idempotency_key or "").startswith("automation ")]


def test_drift_event_triggers_a_retrain_that_promotes(
    prod: ProdStack, forecasted: Any, e2e_timings: dict[str, float]
):
    """The monitor run sees the drift and emits the event; the deployment's trigger runs the
    retrain on the worker (env prod from the event), which promotes its refit: champion 3,
    previous 1, in the MLflow database and in the warehouse's audit trail."""
    from prefect.events.filters import EventFilter, EventNameFilter

    from salesflow.governance.lifecycle import read_audit
    from salesflow.modelling.registry import get_alias_version

    t0 = time.perf_counter()
    monitor = prod.run("monitor-forecasts/after-actuals")
    e2e_timings["prod: monitor-forecasts/after-actuals"] = time.perf_counter() - t0
    assert monitor.state.is_completed(), prod.describe(monitor)
    with prod.client() as c:
        flt = EventFilter(event=EventNameFilter(name=["salesflow.drift.detected"]))
        deadline = time.monotonic() + 30
        while not (events := c.read_events(filter=flt, limit=10).events):
            assert time.monotonic() < deadline, "no drift event reached the server"
            time.sleep(1)
    ev = events[0]
    assert ev.resource.id == f"salesflow.model.{MODEL}"
    assert (ev.payload["env"], ev.payload["model_name"]) == ("prod", MODEL)

    t1 = time.perf_counter()
    deadline = time.monotonic() + TRIGGER_TIMEOUT_S
    while True:
        runs = _triggered(prod)
        done = [r for r in runs if r.state and r.state.is_completed()]
        bad = [r for r in runs if r.state and (r.state.is_failed() or r.state.is_crashed())]
        assert not bad, prod.describe(bad[0])
        if done:
            break
        assert time.monotonic() < deadline, f"no triggered retrain completed: {runs}\n" + (
            log_tail(prod.root / "worker.log", 60)
        )
        time.sleep(1)
    e2e_timings["prod: drift event -> triggered retrain Completed"] = time.perf_counter() - t1
    retrain = done[0]
    assert retrain.parameters["env"] == "prod"
    # Wait for the other event's run (cancelled by the concurrency limit) to settle.
    deadline = time.monotonic() + 60
    while not all(r.state and r.state.is_final() for r in _triggered(prod)):
        assert time.monotonic() < deadline, _triggered(prod)
        time.sleep(1)

    champion = get_alias_version(prod.tracking_uri, MODEL, "champion")
    previous = get_alias_version(prod.tracking_uri, MODEL, "previous")
    assert champion is not None and str(champion.version) == "3", prod.describe(retrain)
    assert previous is not None and str(previous.version) == "1"
    aliases = _mlflow_rows(
        prod, "SELECT alias, version FROM registered_model_aliases ORDER BY alias"
    )
    assert aliases == [("champion", 3), ("previous", 1)]

    audit = read_audit(prod.warehouse_url, "model_audit", model_name=MODEL)
    rows = audit[audit["flow_run_id"] == str(retrain.id)]
    assert len(rows) == 1, audit.to_string()
    row = rows.iloc[0]
    assert (row["action"], row["from_version"], row["to_version"], row["actor"]) == (
        "promote",
        "1",
        "3",
        "retrain-flow",
    )


def test_api_serves_the_promoted_champion_over_http(prod: ProdStack, forecasted: Any):
    """`salesflow serve` with the worker's prod environment loads the champion from the
    MLflow server over HTTP (version 3 after the promotion) and serves the warehouse rows."""
    from .serve import READY_TIMEOUT_S, start_service, wait_for

    api = start_service(prod.procs, "prod", prod.worker_env, prod.root)
    wait_for(api.bg, f"{api.url}/ready", READY_TIMEOUT_S, "salesflow serve (prod)")
    info = api.get("/model/info")
    assert info.status_code == 200, info.text
    body = info.json()
    assert (body["name"], body["version"], body["alias"]) == (MODEL, "3", "champion")
    assert info.headers["X-Model-Version"] == "3"
    page = api.get("/forecasts", params={"limit": 5000})
    assert page.status_code == 200, page.text
    got = page.json()
    latest = max(_rows_per_origin(prod))
    assert got["origin"] == latest
    assert got["count"] == len(got["rows"]) == _rows_per_origin(prod)[latest]
    assert {r["model_version"] for r in got["rows"]} == {"1"}  # the rows version 1 wrote


def _task_runs(st: ProdStack, run_id: Any, name: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with st.client() as c:
        runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return [t for t in runs if t.name.startswith(name)]


def test_mlflow_server_down_fails_the_forecast_cleanly(
    prod: ProdStack, forecasted: Any, e2e_timings: dict[str, float]
):
    """MLflow down: the run's first I/O step (preflight-checks) fails naming the tracking URI,
    is retried as transient (3 tries), nothing is written, the run is Failed with that
    message; the server back up on the same database and store: the next forecast works."""
    from salesflow.modelling.registry import get_alias_version

    before = _rows_per_origin(prod)
    e2e_timings["prod: stop mlflow server (SIGINT)"] = prod.stop("mlflow")
    t0 = time.perf_counter()
    run = prod.run("batch-forecast/weekly")
    e2e_timings["prod: forecast with MLflow down -> Failed"] = time.perf_counter() - t0
    assert run.state.is_failed(), prod.describe(run)
    message = run.state.message or ""
    assert "ServerUnreachable" in message, message
    assert f"MLflow tracking server {prod.tracking_uri} does not answer" in message, message
    (check,) = _task_runs(prod, run.id, "preflight-checks")
    assert check.state.is_failed() and check.run_count == 3, (check.state, check.run_count)
    assert not _task_runs(prod, run.id, "load-champion"), "work started with MLflow down"
    assert _rows_per_origin(prod) == before, "a forecast with MLflow down wrote rows"

    t0 = time.perf_counter()
    e2e_timings["prod: mlflow server restart -> /health"] = prod.start_mlflow()
    run = prod.run("batch-forecast/weekly")
    e2e_timings["prod: forecast after MLflow is back"] = time.perf_counter() - t0
    assert run.state.is_completed(), prod.describe(run)
    champion = get_alias_version(prod.tracking_uri, MODEL, "champion")
    after = _rows_per_origin(prod)
    new = {o: n for o, n in after.items() if o not in before}
    assert list(new) == ["2012-11-02"], after
    from salesflow.storage.warehouse import read_forecasts

    rows = read_forecasts(prod.warehouse_url, table="sales_forecasts")
    rows = rows[rows["forecast_origin"].dt.date.astype(str) == "2012-11-02"]
    assert set(rows["model_version"]) == {str(champion.version)}
    assert len(rows) == rows["unique_id"].nunique() * HORIZON


def test_prefect_server_restart_during_a_forecast_never_duplicates_rows(
    prod: ProdStack, forecasted: Any, e2e_timings: dict[str, float]
):
    """The Prefect server stopped and started again (same database and port) while a forecast
    run is Running: the run ends Completed or Crashed/Failed, and every origin in the
    warehouse holds series x horizon rows, each (series, target date) once."""
    run_id = prod.submit("batch-forecast/weekly")
    deadline = time.monotonic() + 120
    while True:
        with prod.client() as c:
            state = c.read_flow_run(run_id).state
        if state and state.is_running():
            break
        assert not (state and state.is_final()), state
        assert time.monotonic() < deadline, f"the forecast run did not start: {state}"
        time.sleep(0.5)
    t0 = time.perf_counter()
    stopped_at = dt.datetime.now(dt.UTC)
    prod.stop("prefect")
    e2e_timings["prod: prefect server restart -> /api/health"] = prod.start_prefect()
    back_at = dt.datetime.now(dt.UTC)
    e2e_timings["prod: prefect server down (stop + start)"] = time.perf_counter() - t0
    run = prod.wait_final(run_id, timeout=180)
    with prod.client() as c:
        states = sorted(c.read_flow_run_states(run_id), key=lambda s: s.timestamp)
    history = " -> ".join(f"{s.name} {s.timestamp:%H:%M:%S}" for s in states)
    print(
        f"forecast run through a Prefect server restart (down {stopped_at:%H:%M:%S} -> "
        f"{back_at:%H:%M:%S}): {history}"
    )
    assert run.state.name in {"Completed", "Crashed", "Failed"}, prod.describe(run)
    # In flight across the restart: Running before the stop, final after it.
    assert states[-1].timestamp > stopped_at, history

    import sqlalchemy as sa

    engine = sa.create_engine(prod.warehouse_url)
    try:
        with engine.connect() as conn:
            dupes = conn.exec_driver_sql(
                "SELECT count(*) FROM (SELECT unique_id, forecast_origin, target_date "
                "FROM sales_forecasts GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
            ).scalar()
            per_origin = conn.exec_driver_sql(
                "SELECT forecast_origin, count(*), count(DISTINCT unique_id) "
                "FROM sales_forecasts GROUP BY 1"
            ).all()
    finally:
        engine.dispose()
    assert dupes == 0
    assert all(n == series * HORIZON for _, n, series in per_origin), per_origin

    # The restarted server still runs deployments.
    again = prod.run("batch-forecast/weekly")
    assert again.state.is_completed(), prod.describe(again)
