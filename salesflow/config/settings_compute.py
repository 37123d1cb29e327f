"""The ``compute`` section: where the flows' heavy steps run (this process, or Dask)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
SECRET_WORDS = ("token", "password", "secret", "credential", "api_key", "private_key")


def looks_secret(key: object) -> bool:
    """A setting's key that names a credential (its value is never shown)."""
    return any(w in str(key).lower() for w in SECRET_WORDS)


class ComputeSection(BaseModel):
    """``engine: local`` runs every step in the flow's process, as before. ``engine: dask``
    runs the flow's tasks on a Dask cluster (prefect-dask's ``DaskTaskRunner``): batch
    scoring as mapped tasks over shards of series, training with ``xgboost.dask``.
    ``address`` names an existing scheduler (``tcp://host:8786``; ``tls://`` with Dask's
    own TLS settings); ``cluster_class`` (e.g. ``coiled.Cluster``) is started with
    ``cluster_kwargs`` for the run and closed after it; neither, a local cluster of
    ``n_workers`` processes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["local", "dask"] = "local"
    address: str | None = Field(
        None, description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (None: local)"
    )
    n_workers: int = Field(2, ge=1, le=256, description="local cluster: worker processes")
    threads_per_worker: int = Field(1, ge=1, le=64, description="local cluster: threads each")
    memory_limit: str = Field(
        "6GB", description="local cluster: memory per worker (Dask pauses, then restarts it)"
    )
    shard_series: int = Field(
        20_000, ge=1, description="series per scoring shard (one mapped task each)"
    )
    cluster_class: str | None = Field(
        None,
        description="a Dask cluster class started for the run, e.g. coiled.Cluster "
        "(None: a LocalCluster of n_workers); not with address",
    )
    cluster_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="cluster_class's arguments (no credentials: the provider reads them "
        "from its environment)",
    )
    ingest: Literal["workers", "driver"] = Field(
        "workers",
        description="dask engine: read and validate the data per partition on the workers "
        "(batch forecast, training, retraining), or the whole panel in the flow's process "
        "(driver)",
    )

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        if "://" not in v:
            raise ValueError(
                f"compute.address {v!r} needs a protocol, e.g. tcp://{v} (the scheduler's "
                "address as `dask scheduler` prints it)"
            )
        return v

    @field_validator("cluster_class")
    @classmethod
    def _dotted_class(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        if not _DOTTED.match(v):
            raise ValueError(
                f"compute.cluster_class {v!r} must be a class's import path, e.g. "
                "coiled.Cluster or distributed.LocalCluster"
            )
        return v

    @field_validator("cluster_kwargs")
    @classmethod
    def _no_credentials(cls, v: dict[str, Any]) -> dict[str, Any]:
        secret = [k for k in v if looks_secret(k)]
        if secret:
            raise ValueError(
                f"compute.cluster_kwargs {secret} look like credentials: settings files and "
                "run parameters are not the place for them; let the cluster's provider read "
                "them from its environment (e.g. DASK_COILED__TOKEN for Coiled)"
            )
        return v

    @model_validator(mode="after")
    def _one_cluster(self) -> ComputeSection:
        if self.address and self.cluster_class:
            raise ValueError(
                f"compute.address ({self.address}) and compute.cluster_class "
                f"({self.cluster_class}) both name a cluster: set one of them"
            )
        if self.cluster_kwargs and not self.cluster_class:
            raise ValueError(
                "compute.cluster_kwargs is for compute.cluster_class; the local cluster takes "
                "n_workers, threads_per_worker and memory_limit"
            )
        return self
