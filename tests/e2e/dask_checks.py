"""Running deployments and reading what they left, for test_dask_deployments.py: the
flow run's final state, the task runs of it and its subflows, what each Dask worker executed,
the forecast rows in the warehouse (counts, duplicate keys, staged leftovers, equality)."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from .dask_stack import DaskCluster
from .procs import log_tail
from .stack import RUN_TIMEOUT_S, Stack, client_for

TASK_RUNS_TIMEOUT_S = 30  # task-run states reach the server as events, in batches
RTOL = 1e-6  # forecasts equal within this relative tolerance


@dataclass(frozen=True)
class FlowRun:
    """A deployment run once final: its id, state name and message, seconds to get there."""

    id: Any
    state: str
    message: str | None
    seconds: float


def run_deployment(
    stack: Stack,
    cluster: DaskCluster,
    name: str,
    parameters: dict[str, Any],
    timings: dict[str, float],
    what: str,
    during: Callable[[float], None] | None = None,
) -> FlowRun:
    """Create a run of deployment ``name`` with ``parameters``, wait for its final state
    (read every 0.5 s); ``during(seconds since creation)`` is called every 20 ms until then."""
    if not stack.worker.alive():
        pytest.fail(f"the Prefect worker has exited:\n{log_tail(stack.worker.log)}", pytrace=False)
    t0 = time.perf_counter()
    with client_for(stack) as client:
        dep = client.read_deployment_by_name(name)
        run = client.create_flow_run_from_deployment(dep.id, parameters=parameters)
        read_at = 0.0
        while True:
            elapsed = time.perf_counter() - t0
            if elapsed - read_at >= 0.5:
                read_at = elapsed
                run = client.read_flow_run(run.id)
                if run.state and run.state.is_final():
                    break
            if elapsed > RUN_TIMEOUT_S:
                pytest.fail(
                    f"{name} ({what}): not final after {RUN_TIMEOUT_S} s ({run.state})\n"
                    f"--- worker log\n{log_tail(stack.worker.log, 40)}\n{cluster.logs(15)}",
                    pytrace=False,
                )
            if during is not None:
                during(elapsed)
            time.sleep(0.02 if during is not None else 0.1)
    seconds = time.perf_counter() - t0
    timings[f"{name} {what} (run {str(run.id)[:8]})"] = seconds
    state = run.state
    return FlowRun(run.id, state.name if state else "unknown", state and state.message, seconds)


def assert_completed(stack: Stack, cluster: DaskCluster, run: FlowRun) -> None:
    """The run Completed, else fail with its message and the logs."""
    if run.state != "Completed":
        pytest.fail(
            f"flow run {run.id} ended {run.state}: {run.message}\n--- worker log\n"
            f"{log_tail(stack.worker.log, 60)}\n{cluster.logs(20)}",
            pytrace=False,
        )


def executed(cluster: DaskCluster) -> dict[str, set[tuple[str, str]]]:
    """Worker name -> the (span, task prefix) pairs it has executed so far; a prefix is the
    submitted function's name, a span one computation (so a run's tasks are new pairs)."""
    with cluster.client() as client:
        names = cluster.worker_names(client)
        digests = client.run(lambda dask_worker: list(dask_worker.digests_total))
    out: dict[str, set[tuple[str, str]]] = {}
    for addr, keys in digests.items():
        pairs = {(str(k[1]), str(k[2])) for k in keys if isinstance(k, tuple) and k[0] == "execute"}
        out[names.get(addr, addr)] = pairs
    return out


def executed_since(
    cluster: DaskCluster, before: dict[str, set[tuple[str, str]]]
) -> dict[str, set[str]]:
    """Worker name -> the task prefixes it executed since ``before`` (see :func:`executed`)."""
    now = executed(cluster)
    return {w: {p for _, p in pairs - before.get(w, set())} for w, pairs in now.items()}


def task_runs(stack: Stack, flow_run_id: Any, prefix: str, expected: int) -> list[Any]:
    """The task runs named ``prefix-*`` of the flow run and its subflow runs, once
    ``expected`` of them are final (or at the timeout)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    deadline = time.monotonic() + TASK_RUNS_TIMEOUT_S
    with client_for(stack) as client:
        while True:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
                )
            )
            ids = [flow_run_id, *(c.id for c in children)]
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200
            )
            runs = [r for r in runs if r.name.startswith(f"{prefix}-")]
            done = [r for r in runs if r.state and r.state.is_final()]
            if len(done) >= expected or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


def expected_panel() -> tuple[set[str], int, dt.date]:
    """The test config's series that pass the history gate, its horizon, the next origin."""
    from salesflow.config.settings import load_settings
    from salesflow.data.sources import load_sales

    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("SALESFLOW_")]:
            mp.delenv(k)
        settings = load_settings("test")
    data = load_sales(settings.data)
    counts = data.history.groupby("unique_id").size()
    series = set(counts[counts >= settings.validation.min_history].index.astype(str))
    origin = (data.history["ds"].max() + dt.timedelta(days=7)).date()
    return series, settings.model.horizon, origin


def read_rows(stack: Stack, table: str, model: str) -> pd.DataFrame:
    """The rows of ``model``, sorted by series and target date."""
    from salesflow.storage.warehouse import read_forecasts

    rows = read_forecasts(stack.pg_url, table=table, model_name=model)
    return rows.sort_values(["unique_id", "target_date"]).reset_index(drop=True)


def duplicate_keys(stack: Stack, table: str) -> int:
    """Keys (model, series, origin, target date) held by more than one row."""
    import sqlalchemy as sa

    from salesflow.storage.warehouse import FORECAST_KEY

    cols = ", ".join(FORECAST_KEY)
    sql = f"SELECT count(*) FROM (SELECT {cols} FROM {table} GROUP BY {cols} HAVING count(*) > 1) d"
    engine = sa.create_engine(stack.pg_url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(sql).scalar_one())
    finally:
        engine.dispose()


def assert_forecast_rows(stack: Stack, table: str, version: Any, run: FlowRun) -> pd.DataFrame:
    """Series x horizon rows of the champion ``version`` from ``run``, no duplicate keys;
    the rows."""
    series, horizon, origin = expected_panel()
    rows = read_rows(stack, table, version.name)
    assert duplicate_keys(stack, table) == 0
    assert len(rows) == len(series) * horizon
    assert set(rows["unique_id"]) == series
    assert (rows.groupby("unique_id").size() == horizon).all()
    assert set(rows["forecast_origin"].dt.date) == {origin}
    assert set(rows["model_version"]) == {str(version.version)}
    assert set(rows["mlflow_run_id"]) == {version.run_id}
    assert set(rows["flow_run_id"]) == {str(run.id)}, "the rerun did not replace every row"
    assert rows["forecast"].notna().all()
    return rows


def staged_rows(stack: Stack, table: str) -> int:
    """Rows left in the module's staging table (0 when it does not exist)."""
    import sqlalchemy as sa

    engine = sa.create_engine(stack.pg_url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(f"{table}_stage"):
                return 0
            return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}_stage").scalar_one())
    finally:
        engine.dispose()


def assert_same_forecasts(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    """Same keys, forecasts and bounds within RTOL (relative)."""
    key = ["unique_id", "target_date"]
    assert got[key].equals(want[key]), f"{what}: different series or dates"
    for col in ("forecast", "lo_80", "hi_80"):
        if col in want:
            pd.testing.assert_series_equal(
                got[col].astype(float), want[col].astype(float), rtol=RTOL, atol=0, obj=col
            )


# --- tests ---------------------------------------------------------------------------------
