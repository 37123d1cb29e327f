"""Ingestion on the Dask workers for the batch forecast: read, index, shuffle, validate.

``read-partition-<name>`` reads one partition of the source on a worker, where its rows
stay; ``index-partition-<name>`` hands its small index to the flow's process, which plans
the shards (``plan-shards``). :func:`move_pieces` cuts each partition per shard on the
worker holding it (plain Dask tasks: no task run each) and ``shard-data-<shard>`` puts a
shard's pieces together on a worker; ``validate-shard-<shard>`` runs the gate there and
``data-validation`` merges the shards' reports into one verdict and artifact, in the
flow's process, before anything is staged.
"""

from __future__ import annotations

import datetime as dt
import operator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect import get_run_logger, task

from salesflow.compute.shuffle import (
    PartitionIndex,
    ShardCheck,
    ShufflePlan,
    assemble_shard,
    check_shard,
    index_partition,
    panel_skeleton,
    plan_shuffle,
    scoring_plan,
    split_partition,
)
from salesflow.config.settings import DataSection, Settings, ValidationSection
from salesflow.data.partitions import Partition, list_partitions, load_partition
from salesflow.data.schema import SalesData
from salesflow.data.validation_merge import merge_reports
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.scoring import ScoringPlan
from tasks import TRANSIENT_IO_RETRIES
from tasks.score import parse_origin
from tasks.score_shards import IN_MEMORY, ShardJob, stage_id_of
from tasks.validate import publish_verdict


@dataclass(frozen=True)
class PartitionJob:
    """What the ``score-partitions`` subflow needs, handed over as one future (its run's
    parameters show a placeholder): the partitions, the champion and the run's settings."""

    partitions: list[Partition]
    model: GlobalForecaster
    identity: dict[str, Any]
    settings: Settings
    origin: pd.Timestamp | None
    flow_run_id: str | None
    stage_id: str
    replace_origin: bool

    def shard_job(self, plan: ScoringPlan) -> ShardJob:
        """The sharded scoring's job once the shards are planned and validated."""
        return ShardJob(
            plan,
            self.model,
            self.identity,
            self.settings,
            self.flow_run_id,
            self.stage_id,
            self.replace_origin,
        )


@dataclass(frozen=True)
class Verdict:
    """The validated shards: the scoring plan, which shards keep series, their short ones."""

    plan: ScoringPlan
    keep: list[int]
    short: list[list[str]]


@task(name="list-partitions", **IN_MEMORY)
def list_source_partitions(
    model: GlobalForecaster,
    identity: dict[str, Any],
    settings: Settings,
    origin: str | None,
    flow_run_id: str | None,
    replace_origin: bool,
) -> PartitionJob:
    """The source's partitions (no rows read) and the run's stage id."""
    parts = list_partitions(settings.data)
    get_run_logger().info(
        "%s source in %d partitions, read on the workers", settings.data.source, len(parts)
    )
    return PartitionJob(
        parts,
        model,
        identity,
        settings,
        parse_origin(origin),
        flow_run_id,
        stage_id_of(flow_run_id),
        replace_origin,
    )


@task(
    name="read-partition",
    task_run_name="read-partition-{partition.name}",
    **TRANSIENT_IO_RETRIES,
    **IN_MEMORY,
)
def read_partition(data: DataSection, partition: Partition) -> SalesData:
    """One partition's rows, read on the worker (they stay there); retried only on
    transient I/O."""
    sales = load_partition(data, partition)
    get_run_logger().info(
        "Partition %s: %d series, %d rows", partition.name, sales.n_series, len(sales.history)
    )
    return sales


@task(name="index-partition", task_run_name="index-partition-{partition.name}", **IN_MEMORY)
def partition_index(data: SalesData, partition: Partition, as_of: dt.date | None) -> PartitionIndex:
    """The partition's small index (series, keys, statics, row counts, dates)."""
    return index_partition(data, partition.name, as_of)


@task(name="merge-indexes", **IN_MEMORY)
def merge_indexes(indexes: list[PartitionIndex]) -> SalesData:
    """The panel's series without rows (ids, keys, statics, row counts, dates), for the
    data x champion checks and the plan."""
    return panel_skeleton(indexes)


@task(name="plan-shards", **IN_MEMORY)
def plan_from_indexes(
    indexes: list[PartitionIndex],
    skeleton: SalesData,
    settings: Settings,
    model: GlobalForecaster | None,
    origin: pd.Timestamp | None,
) -> ShufflePlan:
    """Shards of whole groups of the last key (the model's keys, else the data's), planned
    from the indexes only; ``origin`` None: the period after the data."""
    shard_series, as_of = settings.compute.shard_series, settings.data.as_of
    plan = plan_shuffle(indexes, skeleton, model, shard_series, origin, as_of)
    start = "" if model is None else f" from origin {plan.origin.date()}"  # training: none
    get_run_logger().info(
        "%d series (%d rows) of %d partitions in %d shards%s",
        plan.n_series,
        plan.n_rows,
        len(indexes),
        len(plan.names),
        start,
    )
    return plan


def move_pieces(client: Any, partitions: list[Any], plan: ShufflePlan) -> list[list[Any]]:
    """Per shard, Dask futures of its pieces: each partition is cut per shard on the worker
    holding it (Dask runs a task where its input is) and only the pieces move on, to the
    shard's ``shard-data`` task. ``partitions``: ``read-partition``'s futures (prefect-dask
    wraps a Dask future whose value is the task run's final state)."""
    split = [
        client.submit(_split, p.wrapped_future, a, pure=False)
        for p, a in zip(partitions, plan.assign, strict=True)
    ]
    return [
        [client.submit(operator.getitem, split[p], s, pure=False) for p in holders]
        for s, holders in enumerate(plan.holders)
    ]


def release_pieces(pieces: list[list[Any]], partitions: list[Any]) -> None:
    """Drop this process's hold on the pieces and the read partitions once the shards are
    submitted: Dask frees each as soon as the tasks that need it are done (a partition once
    cut, a piece once its shard is assembled) and keeps how to compute it again (the
    scheduler holds a released key's task while a key that needs it lives), should a worker
    holding a shard be lost; a lost shard then reads its partitions again.
    ``partitions``: ``read-partition``'s futures."""
    for futures in pieces:
        for f in futures:
            f.release()
    release_futures(partitions)


def release_futures(values: list[Any]) -> None:
    """Drop this process's hold on the prefect-dask futures among ``values`` (other values
    are left alone) once the tasks that need them are submitted: Dask frees each when those
    tasks are done, and keeps how to compute it again while they run."""
    for v in values:
        wrapped = getattr(v, "wrapped_future", None)
        if wrapped is not None:
            wrapped.release()


def _split(state: Any, assign: pd.Series) -> dict[int, SalesData]:
    """On the partition's worker: its rows per shard."""
    from prefect.states import State

    data = state.result() if isinstance(state, State) else state
    return split_partition(data, assign)


@task(name="shard-data", task_run_name="shard-data-{shard}", **IN_MEMORY)
def shard_data(
    pieces: list[SalesData], shard: str, raw_last: pd.Timestamp, as_of: dt.date | None
) -> SalesData:
    """A shard's rows from every partition holding its series (kept on the worker)."""
    data = assemble_shard(pieces, raw_last, as_of)
    get_run_logger().info(
        "Shard %s: %d series, %d rows from %d partitions",
        shard,
        data.n_series,
        len(data.history),
        len(pieces),
    )
    return data


@task(name="validate-shard", task_run_name="validate-shard-{shard}", **IN_MEMORY)
def validate_shard(
    data: SalesData,
    shard: str,
    cfg: ValidationSection,
    as_of: dt.date | None,
    horizon: int,
    origin: pd.Timestamp,
) -> ShardCheck:
    """The validation gate on one shard (the verdict is the merge of every shard's)."""
    check = check_shard(data, cfg, as_of, horizon, origin)
    status = "passed" if check.report.passed else f"{len(check.report.failed)} checks failed"
    get_run_logger().info("Shard %s: validation %s", shard, status)
    return check


@task(name="validation-verdict", **IN_MEMORY)
def validation_verdict(
    checks: list[ShardCheck], plan: ShufflePlan, cfg: ValidationSection, horizon: int
) -> Verdict:
    """One report over every shard (artifact ``data-validation``): DataValidationError
    naming the failed checks, columns and example rows when any failed; the short series
    dropped are reported once."""
    report = merge_reports([c.report for c in checks], cfg.sample_rows)
    publish_verdict(report, cfg, "Great Expectations validation of the ingested data (every shard)")
    get_run_logger().info(
        "Validation passed: %d checks on %s rows in %d shards",
        len(report.checks),
        f"{report.n_rows:,}",
        len(checks),
    )
    keep = [i for i, c in enumerate(checks) if c.holidays is not None]
    short = [checks[i].report.short_series for i in keep]
    return Verdict(scoring_plan(plan, checks, horizon), keep, short)
