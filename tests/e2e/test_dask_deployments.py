"""The flows on a real Dask cluster (issue #15): ``dask scheduler`` and two ``dask worker``
processes on this machine (dask_stack.py), the session's Prefect server and process worker
(stack.py) and the deployments of deployments/prefect.yaml.

The harness check runs a flow with prefect-dask's ``DaskTaskRunner`` in this process and
sees its task runs execute in the worker processes and report to the server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .dask_stack import WORKER_NAMES, DaskCluster, start_dask_cluster
from .procs import Processes
from .stack import Stack, client_for

pytestmark = pytest.mark.e2e

TASK_RUNS_TIMEOUT_S = 30  # task-run states reach the server as events, in batches


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


def _task_runs(client: Any, flow_run_id: Any, expected: int) -> list[Any]:
    """The flow run's task runs once ``expected`` of them are final (or at the timeout)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + TASK_RUNS_TIMEOUT_S
    while True:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
        )
        done = [r for r in runs if r.state and r.state.is_final()]
        if len(done) >= expected or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


# --- the harness ---------------------------------------------------------------------------


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
    with client_for(stack) as client:
        runs = _task_runs(client, state.state_details.flow_run_id, n)
    assert len(runs) == n
    assert all(r.name.startswith("where-am-i-") for r in runs), [r.name for r in runs]
    assert {r.state.name for r in runs} == {"Completed"}
