"""The batch-forecast flow with ``compute.engine: dask`` on a LocalCluster of 2 worker
processes, against the session's real Prefect server and the PostgreSQL warehouse.

The flow runs in this process (as ``salesflow forecast`` runs it); the shards' task runs
run in the LocalCluster's worker processes, which inherit this process's environment: the
Prefect server (``PREFECT_API_URL``) and the warehouse (``SALESFLOW_WAREHOUSE_URL``, read on
the worker, never a parameter). The champion is registered directly (no training flow),
in a registry of this module only. Checked: the rows equal the local engine's for the same
champion and data, series x horizon of them, a rerun replaces them (no duplicate keys), the
shards' named task runs are in the server's API, and nothing stays staged.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.champions import register_champion

from .stack import Stack

pytestmark = pytest.mark.e2e

SHARD_SERIES = 3  # the test panel: 4 departments x 3 stores -> 4 shards of one department
DASK = {"compute": {"engine": "dask", "shard_series": SHARD_SERIES, "memory_limit": "2GB"}}


@pytest.fixture(scope="module")
def env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """This process set up as a user's shell: the Prefect server, a registry and a
    forecasts table of this module, the warehouse URL in the environment."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    local = tmp_path_factory.mktemp("dask-scoring")
    table = f"sales_forecasts_dask_{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("SALESFLOW_")]:
            mp.delenv(k)
        mp.setenv("PREFECT_API_URL", stack.api_url)  # the LocalCluster's workers inherit it
        mp.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(local))
        mp.setenv("SALESFLOW_WAREHOUSE_URL", stack.pg_url)
        mp.setenv("SALESFLOW_WAREHOUSE__TABLE", table)
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            yield {"local": local, "table": table, "pg_url": stack.pg_url}
    _drop(stack.pg_url, table)


def _drop(url: str, table: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for t in (table, f"{table}_stage"):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {t}")
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def champion(env: dict[str, Any]) -> Any:
    """A forecaster fitted on the test panel, registered with the champion alias."""
    from salesflow.config.settings import load_settings

    return register_champion(load_settings("test"))


def _forecast(**kwargs: Any) -> tuple[dict[str, Any], Any]:
    """Run the batch-forecast flow here; its result and flow run id."""
    from flows.batch_forecast import batch_forecast_flow

    state = batch_forecast_flow(env="test", return_state=True, **kwargs)
    assert state.is_completed(), state.message
    return state.result(), state.state_details.flow_run_id


def _rows(env: dict[str, Any]) -> pd.DataFrame:
    from salesflow.storage.warehouse import read_forecasts

    rows = read_forecasts(env["pg_url"], table=env["table"])
    return rows.sort_values(["unique_id", "target_date"]).reset_index(drop=True)


def _scalar(env: dict[str, Any], sql: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(env["pg_url"])
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(sql).scalar_one())
    finally:
        engine.dispose()


def _task_runs(flow_run_id: Any) -> list[Any]:
    """Task runs of the subflow runs of ``flow_run_id``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        )
        # compute.ingest: workers (the default): the data is read on the workers too
        assert [c.name.split(" ")[0] for c in children] == ["score-partitions"]
        assert children[0].parameters == {"job": "<PrefectConcurrentFuture>"}
        ids = [c.id for c in children]
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200
        )


@pytest.fixture(scope="module")
def local_then_dask(env: dict[str, Any], champion: Any, e2e_timings: dict[str, float]) -> Any:
    """The local engine's rows, then the Dask engine's run over them (result, id, rows)."""
    import time

    t0 = time.perf_counter()
    local, _ = _forecast()
    local_rows = _rows(env)
    e2e_timings["batch forecast, local engine (in-process)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result, run_id = _forecast(overrides=DASK)
    e2e_timings["batch forecast, dask engine (LocalCluster of 2)"] = time.perf_counter() - t0
    return local, local_rows, result, run_id, _rows(env)


def test_dask_rows_equal_local_rows(local_then_dask, champion, small_data):
    """Series x horizon rows of the champion, with the local engine's forecasts."""
    local, local_rows, result, _, rows = local_then_dask
    assert len(rows) == small_data.n_series * 8 == result["rows_written"]
    assert result["rows_replaced"] == len(rows) and result["rows_added"] == 0
    assert set(result) == set(local) and result["series"] == local["series"]
    assert set(rows["model_version"]) == {champion.version}
    keys = ["unique_id", "forecast_origin", "target_date", "horizon"]
    assert rows[keys].equals(local_rows[keys])
    for col in ("forecast", "lo_80", "hi_80", "lo_95", "hi_95"):
        np.testing.assert_allclose(rows[col], local_rows[col], rtol=1e-9)


def test_shards_are_named_task_runs(local_then_dask):
    """The partition read on a worker; per shard, completed data, validation, group sums
    and forecast task runs (the shards live on the workers: no share-shard runs); one
    verdict, one commit."""
    *_, run_id, _ = local_then_dask
    runs = _task_runs(run_id)
    by = lambda prefix: [r for r in runs if r.name.startswith(prefix)]  # noqa: E731
    shards = by("forecast-shard-")
    assert len(shards) == 4 and all(r.state.is_completed() for r in shards)
    assert sorted(r.name for r in shards)[0] == "forecast-shard-000-3-series-from-1/1"
    sums = by("shard-group-sums-")
    assert len(sums) == 4 and all(r.state.is_completed() for r in sums)
    assert by("shard-features-") == by("share-shard-") == []
    assert [r.name for r in by("read-partition-")] == ["read-partition-synthetic-1-of-1"]
    assert len(by("shard-data-")) == len(by("validate-shard-")) == 4
    assert [r.state.is_completed() for r in by("validation-verdict")] == [True]
    assert [r.state.is_completed() for r in by("commit-forecasts")] == [True]


def test_rerun_replaces_and_leaves_no_stage(local_then_dask, env):
    """A second Dask run replaces every row: no duplicate keys, no staged rows left."""
    from salesflow.storage.warehouse import FORECAST_KEY

    _, _, first, _, rows = local_then_dask
    again, run_id = _forecast(overrides=DASK)
    after = _rows(env)
    assert again["rows_replaced"] == len(rows) == len(after)
    assert set(after["flow_run_id"]) == {str(run_id)}
    key = ", ".join(FORECAST_KEY)
    grouped = f"SELECT {key} FROM {env['table']} GROUP BY {key} HAVING count(*) > 1"
    assert _scalar(env, f"SELECT count(*) FROM ({grouped}) d") == 0
    assert _scalar(env, f"SELECT count(*) FROM {env['table']}_stage") == 0
    np.testing.assert_allclose(after["forecast"], rows["forecast"], rtol=1e-9)


def test_local_dir_unused_by_workers(env):
    """The warehouse is PostgreSQL on the workers too: no SQLite file was made."""
    assert not (Path(env["local"]) / "warehouse.db").exists()
