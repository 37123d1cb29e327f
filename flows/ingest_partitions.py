"""Training's and retraining's data: read and validated per partition on the Dask workers
(the ``ingest-partitions`` subflow, ``compute.engine: dask`` with ``compute.ingest:
workers``), else read and validated in the flow's process.

On the workers the batch forecast's ingestion tasks run (``read-partition-<name>``,
``index-partition-<name>``, ``merge-indexes``, ``plan-shards``, ``shard-data-<shard>``,
``validate-shard-<shard>``, ``data-validation``: one verdict and artifact before anything
else runs); then the validated shards come to the flow's process as one panel, which
training needs (the model's layout, the backtest's cuts, baselines and metrics).
"""

from __future__ import annotations

from prefect import flow, unmapped
from prefect.futures import PrefectFuture

from flows.score_partitions import partition_client
from flows.score_shards import run_on_dask
from salesflow.compute.cluster import ingests_on_workers, require_prefect_server
from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from tasks.ingest import ingest_sales
from tasks.ingest_partitions import IngestJob, collect_panel, list_ingest_partitions
from tasks.partitions import (
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
from tasks.score_shards import check_cluster
from tasks.validate import validate_data


@flow(name="ingest-partitions", log_prints=True)
def ingest_partitions_flow(job: IngestJob) -> SalesData:
    """Read, shuffle and validate the partitions on the cluster; the validated panel."""
    s = job.settings
    parts = read_partition.map(data=unmapped(s.data), partition=job.partitions)
    indexes = partition_index.map(
        data=parts, partition=job.partitions, as_of=unmapped(s.data.as_of)
    )
    found = [f.result() for f in indexes]
    skeleton = merge_indexes(found)
    plan = plan_from_indexes(found, skeleton, s, None, None)
    pieces = move_pieces(partition_client(), list(parts), plan)
    shards = shard_data.map(
        pieces=pieces,
        shard=plan.names,
        raw_last=unmapped(plan.raw_last),
        as_of=unmapped(plan.as_of),
    )
    release_pieces(pieces, list(parts))
    checks = validate_shard.map(
        data=shards,
        shard=plan.names,
        cfg=unmapped(s.validation),
        as_of=unmapped(s.data.as_of),
        horizon=unmapped(job.horizon),
        origin=unmapped(plan.origin),
    )
    verdict = validation_verdict([f.result() for f in checks], plan, s.validation, job.horizon)
    return collect_panel([shards[i] for i in verdict.keep], verdict.short, plan)


def ingest_validated(settings: Settings, horizon: int) -> SalesData:
    """The configured data, validated against ``horizon`` (short series dropped): on the
    Dask workers per partition with ``compute.engine: dask`` and ``compute.ingest:
    workers``, else here (``ingest-sales``, ``validate-data``)."""
    if ingests_on_workers(settings.compute):
        require_prefect_server(settings.compute)
        check_cluster(settings)
        job: PrefectFuture[IngestJob] = list_ingest_partitions.submit(settings, horizon)
        return run_on_dask(ingest_partitions_flow, settings, "ingest-partitions", job)
    data = ingest_sales(settings.data)
    return validate_data(data, settings.validation, settings.data.as_of, horizon)
