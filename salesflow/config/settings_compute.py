"""The ``compute`` section: where the flows' heavy steps run (this process, or Dask)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ComputeSection(BaseModel):
    """``engine: local`` runs every step in the flow's process, as before. ``engine: dask``
    runs the flow's tasks on a Dask cluster (prefect-dask's ``DaskTaskRunner``): batch
    scoring as mapped tasks over shards of series, training with ``xgboost.dask``.
    ``address`` names an existing scheduler (``tcp://host:8786``); empty, a local cluster
    of ``n_workers`` processes is started for the run and closed after it."""

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
    ingest: Literal["workers", "driver"] = Field(
        "workers",
        description="dask engine, batch forecast: read and validate the data per partition "
        "on the workers, or the whole panel in the flow's process (driver)",
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
