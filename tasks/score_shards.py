"""Batch-scoring steps on Dask: plan the shards, group sums, forecast + stage, commit.

Each shard's data stays in the memory of the worker holding it (prefect-dask hands the
Dask future on; Dask runs a task where its input is). With group features,
``shard-group-sums-<shard>`` computes the shard's features there and returns only their
sums and notes (small); ``forecast-shard-<shard>`` computes the features again, forecasts
and stages the rows. The features are never kept between the two passes: the reduce needs
every shard's sums before any forecast, so kept features would pile up on the workers
until the last shard (at a million series, several times the panel). Only small values
come back to the flow's process (the sums, the notes, the rows staged). A worker lost
mid-run loses its running tasks and the data it held: Dask runs those tasks again on the
other workers (Prefect records the task run again), so the run still completes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from salesflow.compute.cluster import check_scheduler
from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from salesflow.data.validation import drop_series
from salesflow.errors import retry_transient
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.scoring import (
    ScoringNotes,
    ScoringPlan,
    ShardPart,
    ShardSummary,
    forecast_shard,
    plan_scoring,
    reduce_shards,
    rows_per_store,
    shard_features,
    warehouse_rows,
)
from salesflow.storage.staging import (
    commit_stage,
    drop_stage,
    drop_stale_stages,
    stage_forecasts,
)
from salesflow.storage.warehouse import WriteResult, describe_write, redact_url
from tasks import TRANSIENT_IO_RETRIES
from tasks.score import log_notes, parse_origin, run_context, warn_kept

# Large values (shard data, the model) pass between tasks in memory, never as results.
IN_MEMORY: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


@dataclass(frozen=True)
class ShardJob:
    """Everything the ``score-shards`` subflow needs, handed over as one future (so the
    subflow run's parameters show a placeholder, not the data, the model or settings)."""

    plan: ScoringPlan
    model: GlobalForecaster
    identity: dict[str, Any]
    settings: Settings
    flow_run_id: str | None  # the batch-forecast run: on every row and the runs record
    stage_id: str
    replace_origin: bool

    @property
    def needs_group_sums(self) -> bool:
        """Group features span shards (several keys): a first pass reduces their sums."""
        return bool(getattr(self.model, "group_features_", None))


@dataclass(frozen=True)
class ShardResult:
    """What one shard's forecast task returns: its summary, rows staged, rows per store."""

    summary: ShardSummary
    rows_staged: int
    per_store: list[dict]


@task(name="plan-shards", **IN_MEMORY)
def plan_shards(
    model: GlobalForecaster,
    identity: dict[str, Any],
    data: SalesData,
    settings: Settings,
    origin: str | None,
    flow_run_id: str | None,
    replace_origin: bool,
) -> ShardJob:
    """Split the series into shards of ``compute.shard_series`` (whole groups of the last
    key) with what every shard shares; the stage is named after the flow run."""
    plan = plan_scoring(model, data, settings.compute.shard_series, parse_origin(origin))
    sizes = [d.n_series for d in plan.shards]
    get_run_logger().info(
        "%d series in %d shards (%s series each) from origin %s",
        sum(sizes),
        len(sizes),
        f"{min(sizes)}-{max(sizes)}" if sizes else 0,
        plan.origin.date(),
    )
    stage_id = stage_id_of(flow_run_id, plan.started_at)
    return ShardJob(plan, model, identity, settings, flow_run_id, stage_id, replace_origin)


def stage_id_of(flow_run_id: str | None, started: dt.datetime | None = None) -> str:
    """The run's stage id: its flow run id (a retried flow run re-stages in place), else a
    timestamp of when it started."""
    stamp = (started or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S%f")
    return f"batch-forecast-{flow_run_id or stamp}"


@task(name="share-model", **IN_MEMORY)
def share_model(model: GlobalForecaster) -> GlobalForecaster:
    """The champion, sent to the cluster once: the shard tasks take it from there (Dask
    copies it between workers) instead of each carrying its own copy from the flow."""
    return model


@task(name="share-shard", task_run_name="share-shard-{shard}", **IN_MEMORY)
def share_shard(data: SalesData, shard: str) -> SalesData:  # noqa: ARG001 - the name
    """A shard planned in the flow's process, sent to a worker once: its group sums and its
    forecast both read it there."""
    return data


@dataclass(frozen=True)
class ShardOrigin:
    """What every shard's features need besides its data (small): the origin, the whole
    panel's holiday flags and first date."""

    origin: pd.Timestamp
    holidays: pd.Series
    start: pd.Timestamp

    @classmethod
    def of(cls, plan: ScoringPlan) -> ShardOrigin:
        return cls(plan.origin, plan.holidays, plan.start)


def _shard_part(
    model: GlobalForecaster, data: SalesData, at: ShardOrigin, short: list[str] | None
) -> ShardPart:
    """A shard's covariate fill and features at the origin, without its ``short`` series
    (dropped by the validation gate)."""
    if short:
        data = drop_series(data, short)
    return shard_features(model, data, at.origin, at.holidays, at.start)


@task(name="shard-group-sums", task_run_name="shard-group-sums-{shard}", **IN_MEMORY)
def shard_group_sums(
    model: GlobalForecaster,
    data: SalesData,
    shard: str,
    at: ShardOrigin,
    short: list[str] | None = None,
) -> ShardSummary:
    """A shard's features, reduced on its worker to their group sums and notes: what the
    reduce needs of it (the features themselves are dropped)."""
    summary = _shard_part(model, data, at, short).summary
    get_run_logger().info("Shard %s: group sums of %d series", shard, summary.n_series_forecast)
    return summary


@task(name="group-means", **IN_MEMORY)
def group_means(
    summaries: list[ShardSummary], job_plan: ScoringPlan
) -> tuple[dict[str, pd.DataFrame], ScoringNotes]:
    """The group means over every shard and the run's notes; one error naming every
    shard's missing known-ahead values."""
    means, notes = reduce_shards(
        summaries, job_plan.origin, job_plan.data_fingerprint, job_plan.started_at
    )
    log_notes(notes, notes.unknown_categories)
    return means, notes


@task(
    name="forecast-shard",
    task_run_name="forecast-shard-{shard}",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_transient,
    **IN_MEMORY,
)
def forecast_and_stage(
    model: GlobalForecaster,
    data: SalesData,
    shard: str,
    at: ShardOrigin,
    short: list[str] | None,
    means: dict[str, pd.DataFrame] | None,
    identity: dict[str, Any],
    settings: Settings,
    flow_run_id: str | None,
    stage_id: str,
) -> ShardResult:
    """One shard's features and forecasts, staged in the warehouse under ``stage_id``
    (re-staging a shard replaces its rows). ``means`` None (no group features): this shard
    alone."""
    part = _shard_part(model, data, at, short)
    if part.summary.gaps is not None:  # group-means raises for every shard at once
        return ShardResult(part.summary, 0, [])
    pred = forecast_shard(model, part, means)
    rows = warehouse_rows(
        pred, model.keys_, identity["name"], identity["version"], identity["run_id"], flow_run_id
    )
    w = settings.warehouse
    # The URL is resolved here, on the worker (warehouse.url_env): never a task parameter.
    n = stage_forecasts(
        settings.warehouse_url, rows, stage_id, shard, table=w.table, schema=w.schema_name
    )
    series = part.summary.n_series_forecast
    get_run_logger().info("Shard %s: %d series, %d rows staged", shard, series, n)
    return ShardResult(part.summary, n, rows_per_store(rows) if n else [])


@task(
    name="commit-forecasts",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def commit_forecasts(
    settings: Settings,
    notes: ScoringNotes,
    stage_id: str,
    flow_run_id: str | None,
    replace_origin: bool,
) -> WriteResult:
    """Move every staged shard into the forecasts table in one transaction, with its
    forecast_runs record (same result as the local path's write-forecasts)."""
    w = settings.warehouse
    context = run_context(settings, notes, flow_run_id)
    res = commit_stage(
        settings.warehouse_url,
        stage_id,
        table=w.table,
        schema=w.schema_name,
        replace_origin=replace_origin,
        runs_table=w.runs_table,
        context=context,
    )
    log = get_run_logger()
    log.info(
        "%s at %s in %.2f s (%d shards staged, one commit)",
        describe_write(res),
        redact_url(settings.warehouse_url),
        res.seconds,
        notes.n_shards,
    )
    warn_kept(log, res, notes.origin.date())
    _drop_stale(settings, log)
    return res


STALE_STAGE = dt.timedelta(days=1)


def _drop_stale(settings: Settings, log: Any) -> None:
    """Staged rows older than a day belong to runs killed before their commit (a failed
    run drops its own): removed after a successful commit; a failure here only warns."""
    w = settings.warehouse
    try:
        n = drop_stale_stages(
            settings.warehouse_url, STALE_STAGE, table=w.table, schema=w.schema_name
        )
    except Exception as exc:  # the forecasts are committed: cleanup must not fail the run
        log.warning("Could not remove stale staged rows: %s", exc)
        return
    if n:
        log.info("Removed %d staged rows of runs that never committed (staged > 1 day ago)", n)


@task(name="check-cluster", **TRANSIENT_IO_RETRIES, cache_policy=NO_CACHE)
def check_cluster(settings: Settings) -> None:
    """The Dask scheduler at ``compute.address`` answers (a local cluster: nothing to check)."""
    workers = check_scheduler(settings.compute)
    if workers is not None:
        get_run_logger().info("Dask scheduler %s: %d workers", settings.compute.address, workers)


@task(name="drop-stage", **TRANSIENT_IO_RETRIES, cache_policy=NO_CACHE)
def drop_staged(settings: Settings, stage_id: str) -> int:
    """Remove the staged rows of a run that failed before its commit."""
    w = settings.warehouse
    n = drop_stage(settings.warehouse_url, stage_id, table=w.table, schema=w.schema_name)
    get_run_logger().info("Dropped %d staged rows of %s", n, stage_id)
    return n
