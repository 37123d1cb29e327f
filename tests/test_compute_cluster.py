"""The Dask connection helpers: a clear error without a Prefect server or a scheduler."""

from __future__ import annotations

import socket

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from salesflow.compute.cluster import (
    ComputeUnavailable,
    NeedsPrefectServer,
    check_scheduler,
    cluster_arguments,
    require_prefect_server,
)
from salesflow.config.settings_compute import ComputeSection
from salesflow.errors import is_transient


def test_dask_needs_a_prefect_server(monkeypatch):
    """engine dask without PREFECT_API_URL: a user error saying what to start and set."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(NeedsPrefectServer, match="prefect server start"):
            require_prefect_server(ComputeSection(engine="dask"))
        require_prefect_server(ComputeSection(engine="local"))  # no server needed
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        require_prefect_server(ComputeSection(engine="dask"))


def test_unreachable_scheduler_is_transient():
    """A scheduler address nobody listens on: ComputeUnavailable naming it, retried."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    compute = ComputeSection(engine="dask", address=f"tcp://127.0.0.1:{port}")
    with pytest.raises(ComputeUnavailable, match=f"127.0.0.1:{port}") as err:
        check_scheduler(compute, timeout="2s")
    assert is_transient(err.value)
    assert cluster_arguments(compute) == {"address": f"tcp://127.0.0.1:{port}"}


def test_local_cluster_needs_no_check():
    """No address: a LocalCluster is started with the run, nothing to check first."""
    compute = ComputeSection(engine="dask", n_workers=3)
    assert check_scheduler(compute) is None
    assert cluster_arguments(compute)["cluster_kwargs"]["n_workers"] == 3
