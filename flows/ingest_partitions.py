"""Training's and retraining's data: read and validated per partition on the Dask workers
(the ``ingest-partitions`` subflow, ``compute.engine: dask`` with ``compute.ingest:
workers``), else read and validated in the flow's process.

On the workers the batch forecast's ingestion tasks run (``read-partition-<name>``,
``index-partition-<name>``, ``merge-indexes``, ``plan-shards``, ``shard-data-<shard>``,
``validate-shard-<shard>``, ``validation-verdict``: one verdict and ``data-validation``
artifact before anything else runs); then the validated shards come to the flow's process
as one panel, which training needs (the model's layout, the backtest's cuts, baselines
and metrics).
"""

from __future__ import annotations

from prefect import flow
from prefect.futures import PrefectFuture

from flows.score_partitions import read_and_validate
from flows.score_shards import run_on_dask
from salesflow.compute.cluster import ingests_on_workers, require_prefect_server
from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from tasks.ingest import ingest_sales
from tasks.ingest_partitions import IngestJob, collect_panel, list_ingest_partitions
from tasks.score_shards import check_cluster
from tasks.validate import validate_data


@flow(name="ingest-partitions", log_prints=True)
def ingest_partitions_flow(job: IngestJob) -> SalesData:
    """Read, shuffle and validate the partitions on the cluster; the validated panel."""
    kept, verdict = read_and_validate(job.settings, job.partitions, job.horizon, None, None)
    return collect_panel(kept, verdict.short)


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
