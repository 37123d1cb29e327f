"""The flows on a real Dask cluster (issue #15): ``dask scheduler`` and two ``dask worker``
processes on this machine (dask_stack.py), the session's Prefect server and process worker
(stack.py) and the deployments of deployments/prefect.yaml.

The deployments run as a user runs them with ``compute.engine: dask``: the flow runs on the
Prefect worker, its parameters carry ``overrides={"compute": {"engine": "dask", "address":
<scheduler>}}``, and the heavy steps run in the Dask workers. Everything here uses a model
name and a forecasts table of its own, so test_deployments.py's champion and table are
untouched whatever the order.

1. The harness: a ``DaskTaskRunner`` flow's task runs execute in the workers and reach the
   server.
2. ``train-forecaster/manual`` on the cluster: Completed, the version is champion, the
   workers executed the fit's tasks.
3. ``batch-forecast/weekly`` with the local engine, then on the cluster: Completed, one
   named task run per shard, series x horizon rows of the champion, no duplicate keys, the
   same forecasts as the local run (1e-6 relative).
4. ``batch-forecast/weekly`` again while one Dask worker is SIGKILLed as soon as a shard
   runs on it: Dask reschedules on the survivor, the run completes, the rows are exactly
   those of step 3 (the same origin rerun replaces them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .dask_checks import (
    FlowRun,
    assert_completed,
    assert_forecast_rows,
    assert_same_forecasts,
    executed,
    executed_since,
    expected_panel,
    read_rows,
    run_deployment,
    staged_rows,
    task_runs,
)
from .dask_stack import WORKER_NAMES, DaskCluster, start_dask_cluster
from .procs import Processes
from .stack import Stack

pytestmark = pytest.mark.e2e

MODEL = "salesflow-dask-e2e"  # a model of this module only (test_deployments.py: the default)
SHARD_SERIES = 3  # the test panel's 12 series (4 departments x 3 stores): 4 shards
SHARD_TASK = "forecast-shard"  # task-run names of the scoring shards: forecast-shard-<shard>
# Their Dask keys: prefect-dask submits a wrapper named after the task's function
# (tasks/score_shards.py), keys "<function>-<token>".
SHARD_FUNCTION = "forecast_and_stage"
KILL_TIMEOUT_S = 120  # forecast run created -> a shard seen processing on a worker
KILL_ATTEMPTS = 3  # forecast runs tried until one is caught with a shard running


@dataclass(frozen=True)
class Kill:
    worker: str  # its name
    key: str  # the Dask key of the shard it was running
    after_s: float  # seconds from the flow run's creation
    log_sizes: dict[str, int]  # the workers' log sizes at the kill


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster(
    stack: Stack, processes: Processes, e2e_dir, e2e_timings: dict[str, float]
) -> Iterator[DaskCluster]:
    """A scheduler and two workers reporting to the session's Prefect server."""
    cluster = start_dask_cluster(
        stack.api_url, stack.pg_url, stack.local_dir, e2e_dir / "dask", processes, e2e_timings
    )
    yield cluster
    e2e_timings.update(cluster.stop())


TABLE_SUFFIXES = ("", "_stage", "_runs", "_audit", "_locks")  # the module's tables


@pytest.fixture(scope="module")
def dask_table(stack: Stack) -> Iterator[str]:
    """The forecasts table of this module; it, its staging table and the module's runs,
    audit and lock tables are dropped at the end."""
    import sqlalchemy as sa

    table = f"{stack.table}_dask"
    yield table
    engine = sa.create_engine(stack.pg_url)
    try:
        with engine.begin() as conn:
            for suffix in TABLE_SUFFIXES:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}{suffix}")
    finally:
        engine.dispose()


def overrides(engine: str, cluster: DaskCluster, table: str) -> dict[str, Any]:
    """The flows' ``overrides`` parameter: this module's model and tables, the engine."""
    compute: dict[str, Any] = {"engine": engine}
    if engine == "dask":
        compute |= {"address": cluster.address, "shard_series": SHARD_SERIES}
    return {
        "model": {"name": MODEL},
        "warehouse": {"table": table, "runs_table": f"{table}_runs"},
        "monitor": {"audit_table": f"{table}_audit"},
        "policy": {"lock_table": f"{table}_locks"},
        "compute": compute,
    }


# --- running deployments and reading the cluster ------------------------------------------


def _where_am_i(i: int) -> tuple[int, int, str | None]:
    return i, os.getpid(), os.environ.get("PREFECT_API_URL")


def test_dask_workers_run_prefect_task_runs(stack: Stack, dask_cluster: DaskCluster):
    """A flow with DaskTaskRunner(address=<scheduler>) runs its mapped tasks in the worker
    processes, which report the task runs to the session's Prefect server."""
    from prefect import flow, task
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    where = task(name="where-am-i")(_where_am_i)

    @flow(name="dask-e2e-harness", task_runner=DaskTaskRunner(address=dask_cluster.address))
    def harness(n: int) -> list[tuple[int, int, str | None]]:
        return [f.result() for f in where.map(range(n))]

    with dask_cluster.client() as dc:
        worker_pids = set(dc.run(os.getpid).values())
    assert len(worker_pids) == len(WORKER_NAMES)
    n = 6
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        try:
            state = harness(n, return_state=True)
        finally:
            EventsWorker.drain_all(timeout=10)
            APILogWorker.drain_all(timeout=10)
    assert state.is_completed(), state.message
    results = state.result()
    assert sorted(i for i, _, _ in results) == list(range(n))
    assert {pid for _, pid, _ in results} <= worker_pids, "a task ran outside the workers"
    assert {url for _, _, url in results} == {stack.api_url}
    runs = task_runs(stack, state.state_details.flow_run_id, "where-am-i", n)
    assert len(runs) == n
    assert {r.state.name for r in runs} == {"Completed"}


@pytest.fixture(scope="module")
def dask_champion(
    stack: Stack, dask_cluster: DaskCluster, dask_table: str, e2e_timings: dict[str, float]
) -> tuple[FlowRun, Any, dict[str, str]]:
    """train-forecaster/manual on the cluster: its run, the champion version, and what each
    Dask worker logged during it."""
    from salesflow.modelling.registry import get_alias_version

    sizes = dask_cluster.log_sizes()
    params = {"overrides": overrides("dask", dask_cluster, dask_table)}
    run = run_deployment(
        stack, dask_cluster, "train-forecaster/manual", params, e2e_timings, "on dask"
    )
    tracking_uri = f"sqlite:///{stack.local_dir / 'mlflow.db'}"
    version = get_alias_version(tracking_uri, MODEL, "champion")
    return run, version, dask_cluster.logs_since(sizes)


def test_training_deployment_trains_on_the_cluster(stack, dask_cluster, dask_champion):
    """train-forecaster/manual with compute.engine dask completes and its version becomes
    champion; its data was read and validated on the workers (the ``ingest-partitions``
    subflow's task runs); every fit was one xgboost.dask training spanning both Dask
    workers (each joined the fit's collective with its own rank)."""
    run, version, logged = dask_champion
    assert_completed(stack, dask_cluster, run)
    for prefix in ("read-partition", "validate-shard"):
        runs = task_runs(stack, run.id, prefix, 1)
        assert runs and all(r.state.is_completed() for r in runs), (prefix, runs)
    assert version is not None, f"no {MODEL} version holds the 'champion' alias"
    assert version.name == MODEL
    ranks = {}
    for worker in WORKER_NAMES:
        # xgboost's tracker: "Task [xgboost.dask-<worker name>]:tcp://... got rank <n>"
        found = re.findall(rf"\[xgboost\.dask-{worker}\]:\S+ got rank (\d+)", logged[worker])
        assert found, f"{worker} joined no xgboost.dask training:\n{logged[worker][-2000:]}"
        ranks[worker] = found
    fits = {len(r) for r in ranks.values()}
    assert len(fits) == 1, f"the workers joined different numbers of fits: {ranks}"
    assert {tuple(sorted(r)) for r in zip(*ranks.values(), strict=True)} == {("0", "1")}


@pytest.fixture(scope="module")
def local_forecast(stack, dask_cluster, dask_table, dask_champion, e2e_timings):
    """batch-forecast/weekly with compute.engine local: its run and rows."""
    _, version, _ = dask_champion
    if version is None:
        pytest.fail("no champion: see test_training_deployment_trains_on_the_cluster")
    params = {"overrides": overrides("local", dask_cluster, dask_table)}
    run = run_deployment(stack, dask_cluster, "batch-forecast/weekly", params, e2e_timings, "local")
    assert_completed(stack, dask_cluster, run)
    return run, assert_forecast_rows(stack, dask_table, version, run)


@pytest.fixture(scope="module")
def dask_forecast(stack, dask_cluster, dask_table, dask_champion, local_forecast, e2e_timings):
    """batch-forecast/weekly on the cluster (after the local run, same origin): its run,
    rows and what each worker executed."""
    before = executed(dask_cluster)
    params = {"overrides": overrides("dask", dask_cluster, dask_table)}
    run = run_deployment(
        stack, dask_cluster, "batch-forecast/weekly", params, e2e_timings, "on dask"
    )
    return run, executed_since(dask_cluster, before)


def test_batch_forecast_deployment_scores_shards_on_the_cluster(
    stack, dask_cluster, dask_table, dask_champion, local_forecast, dask_forecast
):
    """batch-forecast/weekly on Dask completes with one named task run per shard, executed
    by the workers; it replaces the local run's rows with series x horizon rows of the
    champion, no duplicate keys, and the same forecasts (1e-6 relative)."""
    _, version, _ = dask_champion
    _, local_rows = local_forecast
    run, ran = dask_forecast
    assert_completed(stack, dask_cluster, run)
    series, _, _ = expected_panel()
    n_shards = -(-len(series) // SHARD_SERIES)
    shards = task_runs(stack, run.id, SHARD_TASK, n_shards)
    assert len({r.name for r in shards}) == n_shards, [r.name for r in shards]
    assert {r.state.name for r in shards} == {"Completed"}
    assert any(SHARD_FUNCTION in p for p in ran.values()), f"the Dask workers ran: {ran}"
    rows = assert_forecast_rows(stack, dask_table, version, run)
    assert staged_rows(stack, dask_table) == 0, "the commit left staged rows"
    assert_same_forecasts(rows, local_rows, "dask vs local")


def test_forecast_survives_a_killed_worker(
    stack, dask_cluster, dask_table, dask_champion, dask_forecast, e2e_timings
):
    """A Dask worker SIGKILLed while a forecast shard runs on it: Dask reschedules the shard
    on the survivor, the run completes, every shard's task run is Completed, and the
    origin's rows are exactly those of the undisturbed run (no duplicates, none missing,
    no staged leftovers)."""
    _, version, _ = dask_champion
    first, _ = dask_forecast
    assert first.state == "Completed", "the undisturbed Dask forecast failed"
    want = read_rows(stack, dask_table, MODEL)
    params = {"overrides": overrides("dask", dask_cluster, dask_table)}
    kill, run, attempts = None, None, 0
    while kill is None and attempts < KILL_ATTEMPTS:
        attempts += 1
        kill, run = _forecast_killing_a_shard_worker(stack, dask_cluster, params, e2e_timings)
    assert kill is not None and run is not None, (
        f"{KILL_ATTEMPTS} forecast runs ended before a {SHARD_FUNCTION} task was seen "
        f"processing on a worker\n{dask_cluster.logs(20)}"
    )
    e2e_timings[f"{kill.worker} SIGKILLed, after the forecast run's creation"] = kill.after_s
    with dask_cluster.client() as dc:
        survivors = set(dask_cluster.worker_names(dc).values())
    assert survivors == set(WORKER_NAMES) - {kill.worker}
    assert_completed(stack, dask_cluster, run)
    got = assert_forecast_rows(stack, dask_table, version, run)
    assert staged_rows(stack, dask_table) == 0, "the commit left staged rows"
    assert_same_forecasts(got, want, "after the kill vs before")
    series, _, _ = expected_panel()
    n_shards = -(-len(series) // SHARD_SERIES)
    shards = task_runs(stack, run.id, SHARD_TASK, n_shards)
    states = {r.name: r.state.name for r in shards}
    assert len(shards) == n_shards and set(states.values()) == {"Completed"}, states
    (survivor,) = survivors
    after_kill = dask_cluster.logs_since(kill.log_sizes)[survivor]
    assert re.search(rf"Task run '{SHARD_TASK}-[^']+' - Finished in state Completed", after_kill), (
        f"{survivor} completed no forecast shard after the kill:\n{after_kill[-2000:]}"
    )


def _forecast_killing_a_shard_worker(
    stack: Stack, cluster: DaskCluster, params: dict[str, Any], timings: dict[str, float]
) -> tuple[Kill | None, FlowRun]:
    """Run batch-forecast/weekly; SIGKILL the first worker seen processing a forecast
    shard (the scheduler's view, polled every 20 ms). The kill (None if the run ended
    first) and the run."""
    kills: list[Kill] = []
    with cluster.client() as dc:
        names = cluster.worker_names(dc)

        def kill_once_a_shard_runs(elapsed: float) -> None:
            if kills or elapsed > KILL_TIMEOUT_S:
                return
            for addr, keys in dc.processing().items():
                shard = [str(k) for k in keys if _is_shard_key(k)]
                if shard and addr in names:
                    sizes = cluster.log_sizes()
                    cluster.kill_worker(names[addr])
                    kills.append(Kill(names[addr], shard[0], elapsed, sizes))
                    return

        run = run_deployment(
            stack,
            cluster,
            "batch-forecast/weekly",
            params,
            timings,
            "on dask, a worker killed",
            during=kill_once_a_shard_runs,
        )
    return (kills[0] if kills else None), run


def _is_shard_key(key: Any) -> bool:
    """A Dask key of a scoring shard's forecast task (``<function>-<token>``)."""
    text = str(key[0] if isinstance(key, tuple) else key)
    return text.startswith(f"{SHARD_FUNCTION}-")
