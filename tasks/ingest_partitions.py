"""Ingestion on the Dask workers for training and retraining (``compute.ingest: workers``).

The partitions are read, cut into shards of whole last-key groups and validated on the
workers by the batch forecast's tasks (:mod:`tasks.partitions`): ``read-partition-<name>``,
``index-partition-<name>``, ``merge-indexes``, ``plan-shards``, ``shard-data-<shard>``,
``validate-shard-<shard>``, ``validation-verdict`` (artifact ``data-validation``).
Training then needs the panel itself (the model's layout, the backtest's cuts and
baselines), so :func:`collect_panel` brings the validated shards, short series dropped,
into the flow's process as one panel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task

from salesflow.compute.shuffle import assemble_shard
from salesflow.config.settings import Settings
from salesflow.data.partitions import Partition, list_partitions
from salesflow.data.schema import SalesData
from salesflow.data.validation import drop_series
from tasks.score_shards import IN_MEMORY


@dataclass(frozen=True)
class IngestJob:
    """What the ``ingest-partitions`` subflow needs, handed over as one future: the
    partitions, the run's settings and the horizon the validation checks against."""

    partitions: list[Partition]
    settings: Settings
    horizon: int


@task(name="list-partitions", **IN_MEMORY)
def list_ingest_partitions(settings: Settings, horizon: int) -> IngestJob:
    """The source's partitions (no rows read)."""
    parts = list_partitions(settings.data)
    get_run_logger().info(
        "%s source in %d partitions, read and validated on the workers",
        settings.data.source,
        len(parts),
    )
    return IngestJob(parts, settings, horizon)


def collect_panel(shards: list[Any], short: list[list[str]]) -> SalesData:
    """The validated shards (``shard-data``'s futures) as one panel in this process, each
    without its short series (``short``, per shard): the rows the local engine's
    ingest + validate keeps."""
    pieces = [drop_series(f.result(), ids) for f, ids in zip(shards, short, strict=True)]
    # Each shard is already assembled and cut at data.as_of (its future starts after the
    # panel's last date) and the shards hold disjoint series: only concatenate and sort.
    data = assemble_shard(pieces, None, None)
    get_run_logger().info(
        "Collected %d series, %s rows from %d validated shards",
        data.n_series,
        f"{len(data.history):,}",
        len(pieces),
    )
    return data
