"""The batch forecast on Dask with ingestion on the workers: the ``score-partitions`` subflow.

The flow's process never holds the panel's rows. ``read-partition-<name>`` reads each
partition of the source on a worker (:mod:`salesflow.data.partitions`), where it stays;
``index-partition-<name>`` sends back its small index. In the flow's process,
``merge-indexes`` joins them, ``check-data-fits`` checks the champion against the data's
shape and ids (before any expensive work) and ``plan-shards`` plans shards of whole groups
of the last key. Each
partition is cut per shard on its worker and only those pieces move, to
``shard-data-<shard>``; ``validate-shard-<shard>`` runs the gate per shard and
``validation-verdict`` merges the reports (one ``data-validation`` artifact, one error
naming every failed check, before anything is staged). The read partitions and the pieces
are handed to Dask as soon as the shards are submitted: each is freed once the tasks that
need it are done (Dask recomputes them if a shard's worker is lost). Then the
sharded scoring of :mod:`flows.score_shards`: ``shard-features`` / ``forecast-shard`` on
the shards' workers, ``commit-forecasts`` once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefect import flow, unmapped
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run

from flows.score_shards import forecast_shards, run_on_dask
from salesflow.config.settings import Settings
from salesflow.data.partitions import Partition
from salesflow.data.schema import SalesData
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.scoring import ScoringNotes
from salesflow.storage.warehouse import WriteResult
from tasks.partitions import (
    PartitionJob,
    Verdict,
    list_source_partitions,
    merge_indexes,
    move_pieces,
    partition_index,
    plan_from_indexes,
    read_partition,
    release_pieces,
    shard_data,
    validate_shard,
    validation_verdict,
)
from tasks.preflight import check_data
from tasks.score_shards import check_cluster

if TYPE_CHECKING:  # flows orchestrate: no pandas at run time
    import pandas as pd


@flow(name="score-partitions", log_prints=True)
def score_partitions_flow(job: PartitionJob) -> tuple[list[dict], ScoringNotes, WriteResult]:
    """Read, shuffle and validate the partitions on the cluster, then forecast the shards,
    stage their rows and commit them once. Returns the rows per store, the run's notes and
    the write's result. ``job``: a future of ``list-partitions``."""
    s = job.settings
    kept, verdict = read_and_validate(
        s,
        job.partitions,
        job.model.horizon,
        job.model,
        job.origin,
        lambda skeleton: check_data(s, skeleton, "forecast", job.model, job.identity["version"]),
    )
    return forecast_shards(job.shard_job(verdict.plan), kept, verdict.short)


def read_and_validate(
    s: Settings,
    partitions: list[Partition],
    horizon: int,
    model: GlobalForecaster | None,
    origin: pd.Timestamp | None,
    on_skeleton: Callable[[SalesData], Any] | None = None,
) -> tuple[list[PrefectFuture[SalesData]], Verdict]:
    """Inside a flow on the ``DaskTaskRunner``: read the partitions on the workers, cut
    them into shards of whole last-key groups (the model's keys, else the data's) and
    validate each shard there; the futures of the shards that keep series, and the
    verdict. ``on_skeleton`` sees the merged indexes (series, no rows) before any shard is
    planned: the batch forecast checks the champion against them there."""
    parts = read_partition.map(data=unmapped(s.data), partition=partitions)
    indexes = partition_index.map(data=parts, partition=partitions, as_of=unmapped(s.data.as_of))
    found = [f.result() for f in indexes]
    skeleton = merge_indexes(found)
    if on_skeleton is not None:
        on_skeleton(skeleton)
    plan = plan_from_indexes(found, skeleton, s, model, origin)
    pieces = move_pieces(partition_client(), list(parts), plan)
    shards = shard_data.map(
        pieces=pieces,
        shard=plan.names,
        raw_last=unmapped(plan.raw_last),
        as_of=unmapped(plan.as_of),
    )
    # Hand the partitions and pieces over to Dask: each is freed as soon as the tasks that
    # need it are done (a partition once cut, a piece once its shard is assembled), so the
    # workers hold about one copy of the rows (Dask recomputes them if a worker is lost).
    release_pieces(pieces, list(parts))
    checks = validate_shard.map(
        data=shards,
        shard=plan.names,
        cfg=unmapped(s.validation),
        as_of=unmapped(s.data.as_of),
        horizon=unmapped(horizon),
        origin=unmapped(plan.origin),
    )
    verdict = validation_verdict([f.result() for f in checks], plan, s.validation, horizon)
    return [shards[i] for i in verdict.keep], verdict


def partition_client() -> Any:
    """The Dask client of this flow's ``DaskTaskRunner``."""
    context = FlowRunContext.get()
    assert context is not None and context.task_runner is not None
    return context.task_runner.client  # type: ignore[attr-defined]  # DaskTaskRunner


def score_partitions_on_dask(
    model: GlobalForecaster,
    identity: dict[str, Any],
    settings: Settings,
    origin: str | None,
    replace_origin: bool,
) -> tuple[list[dict], ScoringNotes, WriteResult]:
    """List the partitions here, run ``score-partitions`` on the configured Dask cluster."""
    check_cluster(settings)
    job: PrefectFuture[PartitionJob] = list_source_partitions.submit(
        model, identity, settings, origin, flow_run.id, replace_origin
    )
    return run_on_dask(score_partitions_flow, settings, "score-partitions", job)
