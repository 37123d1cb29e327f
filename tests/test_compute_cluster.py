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
        with pytest.raises(NeedsPrefectServer, match="prefect server start") as err:
            require_prefect_server(ComputeSection(engine="dask"))
        assert "training and retraining: or compute.ingest: driver" in str(err.value)
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


# ---- compute.cluster_class / cluster_kwargs ----------------------------------------------
@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"address": "tcp://10.0.0.5:8786", "cluster_class": "coiled.Cluster"},
            "both name a cluster",
        ),
        ({"cluster_kwargs": {"n_workers": 4}}, "cluster_kwargs is for compute.cluster_class"),
        ({"cluster_class": "Cluster"}, "must be a class's import path"),
        (
            {"cluster_class": "coiled.Cluster", "cluster_kwargs": {"token": "abc"}},
            "look like credentials",
        ),
    ],
)
def test_cluster_settings_mistakes(given, message):
    """Two clusters named, arguments without a class, a bare name, a credential: refused."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        ComputeSection(engine="dask", **given)


def test_cluster_class_started_with_its_arguments():
    """compute.cluster_class + cluster_kwargs: that class is started for the run with those
    arguments (here distributed's LocalCluster, threads, one worker) and closed after it;
    the same arguments go to prefect-dask's DaskTaskRunner."""
    from salesflow.compute.cluster import dask_client

    kwargs = {"n_workers": 1, "threads_per_worker": 1, "processes": False}
    compute = ComputeSection(
        engine="dask",
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={**kwargs, "dashboard_address": ":0"},
    )
    assert cluster_arguments(compute) == {
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {**kwargs, "dashboard_address": ":0"},
    }
    with dask_client(compute) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.submit(sum, [1, 2, 3]).result() == 6
        cluster = client.cluster
    assert cluster.status.name == "closed"


def test_missing_cluster_class_names_the_package():
    """A cluster class whose package is not installed: one user error naming what to install."""
    from salesflow.compute.cluster import ClusterClassMissing
    from salesflow.errors import UserError

    compute = ComputeSection(engine="dask", cluster_class="nosuchprovider.Cluster")
    with pytest.raises(ClusterClassMissing, match="pip install nosuchprovider") as err:
        check_scheduler(compute)
    assert isinstance(err.value, UserError) and not is_transient(err.value)


# ---- a TLS scheduler ---------------------------------------------------------------------
def _self_signed(folder) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key (also used as the CA)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


def test_tls_scheduler(tmp_path):
    """A real `dask scheduler --protocol tls` and `dask worker`: without Dask's TLS settings
    the user is told which to set; with them (Dask's own config, as its environment
    variables DASK_DISTRIBUTED__COMM__TLS__* set it) salesflow connects and runs a task."""
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    import dask

    from salesflow.compute.cluster import TlsNotConfigured, dask_client

    cert, key = _self_signed(tmp_path)
    tls = ["--tls-ca-file", cert, "--tls-cert", cert, "--tls-key", key]
    dask_cli = str(Path(sys.executable).parent / "dask")
    sched_file = tmp_path / "scheduler.json"
    procs = [
        subprocess.Popen(
            [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--protocol", "tls"]
            + ["--dashboard-address", ":0", "--scheduler-file", str(sched_file), *tls],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "scheduler.log").open("w"),
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tls://")
        procs.append(
            subprocess.Popen(
                [dask_cli, "worker", address, "--nthreads", "1", "--no-dashboard", *tls],
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / "worker.log").open("w"),
            )
        )
        compute = ComputeSection(engine="dask", address=address)
        unset = dask.config.set({"distributed.comm.tls.ca-file": None})
        with unset, pytest.raises(TlsNotConfigured, match="DASK_DISTRIBUTED__COMM__TLS__CA_FILE"):
            check_scheduler(compute)
        config = {
            "distributed.comm.tls.ca-file": cert,
            "distributed.comm.tls.client.cert": cert,
            "distributed.comm.tls.client.key": key,
        }
        with dask.config.set(config):
            with dask_client(compute) as client:
                client.wait_for_workers(1, timeout=60)
                assert client.submit(sum, [4, 5]).result() == 9
            assert check_scheduler(compute) == 1
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_credential_in_cluster_kwargs_is_never_echoed():
    """The settings error names the credential-like key but masks its value."""
    from salesflow.config.settings import SettingsError, load_settings

    kwargs = {"api_token": "s3cr3t-value", "n_workers": 3}
    compute = {"engine": "dask", "cluster_class": "coiled.Cluster", "cluster_kwargs": kwargs}
    with pytest.raises(SettingsError) as err:
        load_settings("test", compute=compute)
    assert "['api_token'] look like credentials" in str(err.value)
    assert "s3cr3t" not in str(err.value) and "'n_workers': 3" in str(err.value)


# ---- workers that keep dying ---------------------------------------------------------------
def _killed(key: str) -> Exception:
    from types import SimpleNamespace

    from distributed import KilledWorker

    worker = SimpleNamespace(address="tcp://127.0.0.1:40001")  # the scheduler's WorkerState
    return KilledWorker(key, worker, 3)  # as the scheduler raises it


def test_lost_workers_say_what_to_change():
    """KilledWorker on a partition's read: smaller partitions or more memory; on a shard
    task: a lower shard_series; the local cluster's memory limit is named."""
    from salesflow.compute.cluster import lost_workers_message

    local = ComputeSection(engine="dask", memory_limit="7GB")
    read = lost_workers_message(_killed("read_partition-8e31f4b3"), local)
    assert "died 4 times" in read and "compute.memory_limit, now 7GB" in read
    assert "data.synthetic.parts" in read and "data.sql_parts" in read
    assert "shard_series" not in read and "table is as it was" in read
    remote = ComputeSection(engine="dask", address="tcp://10.0.0.5:8786", shard_series=5000)
    shard = lost_workers_message(_killed("forecast_shard-77aa"), remote)
    assert "lower compute.shard_series (now 5,000 series)" in shard
    assert "--memory-limit" in shard and "data.sql_parts" not in shard


def test_run_on_dask_turns_killed_workers_into_advice():
    """A subflow on the DaskTaskRunner failing with KilledWorker: the batch forecast's error
    is WorkersLost with that advice (the cause kept), not Dask's bare message."""
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from flows.score_shards import run_on_dask
    from salesflow.compute.cluster import WorkersLost
    from salesflow.config.settings import load_settings

    @flow(name="dies-reading")
    def dies_reading(job: int) -> None:
        raise _killed("read_partition-0c0ffee")

    compute = {"engine": "dask", "n_workers": 1, "memory_limit": "1GB"}
    settings = load_settings("test", compute=compute)
    harness = prefect_test_harness(server_startup_timeout=120)
    with harness, pytest.raises(WorkersLost, match="more, smaller partitions") as err:
        run_on_dask(dies_reading, settings, "score-partitions", 1)
    assert "compute.memory_limit, now 1GB" in str(err.value)
    assert type(err.value.__cause__).__name__ == "KilledWorker"
