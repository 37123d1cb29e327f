"""Connecting to the Dask cluster named by the ``compute`` settings.

``compute.address`` set: an existing scheduler (``dask scheduler`` + ``dask worker``
processes, Kubernetes...; ``tls://`` addresses take Dask's own TLS configuration).
``compute.cluster_class`` set (e.g. ``coiled.Cluster``): that class, started with
``compute.cluster_kwargs`` for the run and closed after it. Neither: a
``distributed.LocalCluster`` of ``compute.n_workers`` processes, started and closed the same
way. No Prefect here:
:mod:`tasks` and :mod:`flows` wrap these (prefect-dask's ``DaskTaskRunner`` takes the same
arguments as :func:`cluster_arguments`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from salesflow.config.settings_compute import ComputeSection
from salesflow.errors import UserError


class ComputeUnavailable(ConnectionError):
    """The Dask scheduler at ``compute.address`` cannot be reached (transient: retried)."""


class NeedsPrefectServer(UserError):
    """Dask workers are other processes: they report task runs to a real Prefect server."""


class ClusterClassMissing(UserError):
    """``compute.cluster_class`` cannot be imported (its package is not installed)."""


def cluster_class(compute: ComputeSection) -> Any:
    """The class ``compute.cluster_class`` names, imported (:class:`ClusterClassMissing`
    naming the package to install when it cannot be); None when not set."""
    if not compute.cluster_class:
        return None
    module, _, name = compute.cluster_class.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ClusterClassMissing(
            f"compute.cluster_class {compute.cluster_class} cannot be imported ({exc}); "
            f"install its package where the flow runs (e.g. pip install {module.split('.')[0]})"
        ) from None
    if not callable(found):
        raise ClusterClassMissing(f"compute.cluster_class {compute.cluster_class} is not a class")
    return found


class TlsNotConfigured(UserError):
    """A ``tls://`` scheduler address without Dask's TLS credentials configured."""


TLS_SETTINGS = (
    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and "
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"
)


def require_tls_credentials(compute: ComputeSection) -> None:
    """A ``tls://`` address needs Dask's TLS configuration (its ``distributed.comm.tls``
    settings: a CA file and a client certificate and key), read from Dask's config files or
    its environment variables; :class:`TlsNotConfigured` names them when missing."""
    if not (compute.address or "").startswith("tls://"):
        return
    from distributed.security import Security

    sec = Security()  # reads distributed.comm.tls.* from Dask's config and environment
    missing = [
        name
        for name, attr in (("ca-file", "tls_ca_file"), ("client.cert", "tls_client_cert"))
        if not getattr(sec, attr, None)
    ]
    if missing:
        raise TlsNotConfigured(
            f"compute.address {compute.address} speaks TLS, but Dask's TLS settings lack "
            f"{', '.join('distributed.comm.tls.' + m for m in missing)}: set {TLS_SETTINGS} "
            "to the scheduler's CA file and this client's certificate and key"
        )


def cluster_arguments(compute: ComputeSection) -> dict[str, Any]:
    """Keyword arguments for ``DaskTaskRunner`` (and :func:`dask_client`): the scheduler's
    address, a configured cluster class and its arguments, or a local cluster's size."""
    if compute.address:
        return {"address": compute.address}
    if compute.cluster_class:
        kwargs = dict(compute.cluster_kwargs)
        return {"cluster_class": compute.cluster_class, "cluster_kwargs": kwargs}
    return {
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {
            "n_workers": compute.n_workers,
            "threads_per_worker": compute.threads_per_worker,
            "memory_limit": compute.memory_limit,
            "processes": True,
            # A free port: None still takes :8787 (a warning when another cluster holds it).
            "dashboard_address": ":0",
        },
    }


def ingests_on_workers(compute: ComputeSection) -> bool:
    """The flows read and validate the data per partition on the Dask workers (``engine:
    dask`` and ``ingest: workers``): the batch forecast never holds it as a whole in the
    flow's process; training and retraining gather the validated panel there."""
    return compute.engine == "dask" and compute.ingest == "workers"


def require_prefect_server(compute: ComputeSection) -> None:
    """:class:`NeedsPrefectServer` unless ``PREFECT_API_URL`` names a server: a flow on
    Prefect's temporary (ephemeral) server cannot be reached from Dask worker processes."""
    if compute.engine != "dask":
        return
    from prefect.settings import PREFECT_API_URL

    if not (PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL")):
        raise NeedsPrefectServer(
            "compute.engine is dask, but no Prefect server is configured: Dask workers run "
            "tasks in other processes, which report to the server at PREFECT_API_URL. Start "
            "one (`prefect server start`) and `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
            ", or set compute.engine: local (training and retraining: or compute.ingest: "
            "driver, which reads the data in the flow's process)"
        )


@contextmanager
def dask_client(compute: ComputeSection, timeout: str = "30s") -> Iterator[Any]:
    """A ``distributed.Client`` on the configured cluster (a local one is started and
    closed here). :class:`ComputeUnavailable` names the address when it does not answer."""
    from distributed import Client, LocalCluster

    if compute.address:
        require_tls_credentials(compute)
        try:
            client = Client(compute.address, timeout=timeout, set_as_default=False)
        except OSError as exc:
            raise ComputeUnavailable(
                f"the Dask scheduler at {compute.address} does not answer within {timeout} "
                f"(compute.address): {exc}"
            ) from exc
        with client:
            yield client
        return
    kwargs = cluster_arguments(compute)["cluster_kwargs"]
    start = cluster_class(compute) or LocalCluster
    with start(**kwargs) as cluster, Client(cluster, set_as_default=False) as client:
        yield client


def check_scheduler(compute: ComputeSection, timeout: str = "10s") -> int | None:
    """The number of workers of the scheduler at ``compute.address`` (None without an
    address: a local cluster is started with the run). :class:`ComputeUnavailable` names
    the address when it does not answer within ``timeout``; a ``cluster_class`` that
    cannot be imported is :class:`ClusterClassMissing`, a ``tls://`` address without Dask's
    TLS settings :class:`TlsNotConfigured`."""
    cluster_class(compute)
    if not compute.address:
        return None
    with dask_client(compute, timeout=timeout) as client:
        return len(client.scheduler_info(n_workers=-1).get("workers", {}))


class WorkersLost(RuntimeError):
    """Dask gave up on a task whose workers kept dying (most often: out of memory)."""


# Tasks that hold a whole partition of the source (prefect-dask's keys are the function's
# name and a hash); any other task holds a shard.
_PARTITION_TASKS = ("read_partition", "partition_index", "_split", "getitem")


def lost_workers_message(exc: BaseException, compute: ComputeSection) -> str:
    """What a ``distributed.KilledWorker`` means for a salesflow run, and what to change:
    smaller partitions of the source or shards, or more memory per worker."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    key: Any = args[0] if args else "?"
    key = key[0] if isinstance(key, tuple) and key else key
    failures = args[2] if len(args) > 2 else None
    tries = f"{failures + 1} times" if isinstance(failures, int) else ""
    function = str(key).rsplit("-", 1)[0]
    if function in _PARTITION_TASKS:
        fix = (
            "a partition of the source may not fit in a worker's memory: read the data in "
            "more, smaller partitions (data.synthetic.parts, more files in the data.path "
            "glob, data.sql_parts)"
        )
    else:
        fix = (
            f"a shard may not fit in a worker's memory: lower compute.shard_series "
            f"(now {compute.shard_series:,} series)"
        )
    memory = (
        "the workers' --memory-limit"
        if compute.address or compute.cluster_class
        else f"compute.memory_limit, now {compute.memory_limit}"
    )
    return (
        f"Dask gave up on task {key}: the workers running it died {tries or 'repeatedly'} "
        f"(most often out of memory: {memory}; a worker's nanny restarts it past 95 % of "
        f"it). {fix[0].upper()}{fix[1:]}, or give each worker more memory. Nothing was "
        "committed: the forecasts table is as it was."
    )
