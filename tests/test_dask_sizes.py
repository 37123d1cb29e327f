"""salesflow's ``dask.sizeof`` plugin (``salesflow.compute.sizes``): Dask counts a shard,
and a Prefect state holding one, as the frames inside, so a worker spills them before its
memory limit instead of being killed (``KilledWorker``) with everything unmanaged."""

from __future__ import annotations

import importlib.metadata

import pytest

from salesflow.config.settings import SyntheticSection
from salesflow.data.synthetic import generate_part


@pytest.fixture(scope="module")
def shard():
    return generate_part(SyntheticSection(n_stores=10, n_depts=20, periods=60, parts=1), 0)


def test_plugin_is_installed_as_a_dask_entry_point():
    points = importlib.metadata.entry_points(group="dask.sizeof")
    assert [p.value for p in points if p.name == "salesflow"] == [
        "salesflow.compute.sizes:register"
    ]


def test_a_shard_counts_as_its_frames(shard):
    from dask.sizeof import sizeof

    frames = shard.history.memory_usage(deep=False).sum() + shard.future.memory_usage().sum()
    got = sizeof(shard)
    assert frames <= got <= 3 * frames, (got, frames)


def test_a_prefect_state_counts_as_the_result_it_holds(shard):
    from dask.sizeof import sizeof
    from prefect.states import Completed

    state = Completed(data=shard)
    assert sizeof(state) >= shard.history.memory_usage(deep=False).sum()
    assert sizeof(Completed(data=None)) < 10_000


def test_a_worker_reports_a_prefect_task_result_at_its_size(shard):
    """A task run by prefect-dask on a worker process: the scheduler's count of the result
    (what spilling is decided on) is the shard's size, not a few bytes."""
    from distributed import Client, LocalCluster
    from prefect import task
    from prefect.testing.utilities import prefect_test_harness
    from prefect_dask import DaskTaskRunner

    @task(persist_result=False)
    def make() -> object:
        return shard

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    harness = prefect_test_harness(server_startup_timeout=120)
    with cluster, harness, DaskTaskRunner(address=cluster.scheduler_address) as runner:
        future = runner.submit(make, parameters={})
        future.wait()
        with Client(cluster.scheduler_address) as client:
            nbytes = client.nbytes(summary=False)
    assert nbytes[future.wrapped_future.key] >= shard.history.memory_usage().sum()
