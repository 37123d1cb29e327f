"""The batch forecast's scoring on Dask: the ``score-shards`` subflow.

The flow's process plans the shards (``plan-shards``); the subflow runs with prefect-dask's
``DaskTaskRunner`` on the cluster of the ``compute`` settings. ``share-model`` puts the
champion on the cluster once (the shard tasks read it from there). With group features
(several keys) ``share-shard-<shard>`` sends each shard to a worker once and
``shard-group-sums-<shard>`` computes each shard's features on its worker
and hands their sums to ``group-means``, which reduces them; ``forecast-shard-<shard>``
computes the shard's features (again), forecasts it and stages its rows in the warehouse,
and ``commit-forecasts`` moves every staged row into the forecasts table in one
transaction. The reduce and the commit run in the flow's process; the shards' data goes to
the workers as task parameters, one shard per task, and each shard is freed once its
forecast is staged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from prefect import flow, unmapped
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run

from salesflow.compute.cluster import WorkersLost, cluster_arguments, lost_workers_message
from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.scoring import ScoringNotes, merge_rows_per_store
from salesflow.storage.warehouse import WriteResult
from tasks.partitions import release_futures
from tasks.score_shards import (
    ShardJob,
    ShardOrigin,
    check_cluster,
    commit_forecasts,
    drop_staged,
    forecast_and_stage,
    group_means,
    plan_shards,
    shard_group_sums,
    share_model,
    share_shard,
)


@flow(name="score-shards", log_prints=True)
def score_shards_flow(job: ShardJob) -> tuple[list[dict], ScoringNotes, WriteResult]:
    """Forecast every shard on the cluster, stage the rows, commit them once. Returns the
    rows per store, the run's notes and the write's result. ``job``: a future of
    ``plan-shards`` (its run's parameters show a placeholder, never the data)."""
    shards: Sequence[Any] = job.plan.shards
    if job.needs_group_sums:  # read by both passes: sent to a worker once
        shards = list(share_shard.map(data=shards, shard=job.plan.names))
    return forecast_shards(job, shards)


def forecast_shards(
    job: ShardJob, shards: Sequence[Any], short: Sequence[list[str] | None] | None = None
) -> tuple[list[dict], ScoringNotes, WriteResult]:
    """The shards' features, group means, forecasts (staged) and the one commit; staged
    rows are dropped when anything fails. ``shards``: each shard's data, or a future of it
    held by a worker; ``short``: series to leave out of each shard (validation's)."""
    plan = job.plan
    at = ShardOrigin.of(plan)
    shards = list(shards)
    short = list(short) if short is not None else [None] * len(shards)
    try:
        model = share_model.submit(job.model)
        means = None
        if job.needs_group_sums:
            sums = shard_group_sums.map(
                model=unmapped(model), data=shards, shard=plan.names, at=unmapped(at), short=short
            )
            means, notes = group_means([f.result() for f in sums], plan)
        forecasts = forecast_and_stage.map(
            model=unmapped(model),
            data=shards,
            shard=plan.names,
            at=unmapped(at),
            short=short,
            means=unmapped(means),
            identity=unmapped(job.identity),
            settings=unmapped(job.settings),
            flow_run_id=unmapped(job.flow_run_id),
            stage_id=unmapped(job.stage_id),
        )
        # Hand the shards over to Dask: each is freed once its forecast is staged.
        release_futures(shards)
        done = [f.result() for f in forecasts]
        if means is None:
            _, notes = group_means([r.summary for r in done], plan)
        write = commit_forecasts(
            job.settings, notes, job.stage_id, job.flow_run_id, job.replace_origin
        )
    except BaseException:
        _drop_quietly(job)
        raise
    return merge_rows_per_store([r.per_store for r in done]), notes, write


def _drop_quietly(job: ShardJob) -> None:
    """Remove what the shards staged before the failure (the table itself is untouched);
    a failure here is logged by the task and must not hide the original error."""
    with contextlib.suppress(Exception):
        drop_staged(job.settings, job.stage_id)


def score_on_dask(
    model: GlobalForecaster,
    identity: dict[str, Any],
    data: SalesData,
    settings: Settings,
    origin: str | None,
    replace_origin: bool,
) -> tuple[list[dict], ScoringNotes, WriteResult]:
    """Plan the shards here, run ``score-shards`` on the configured Dask cluster."""
    check_cluster(settings)
    job: PrefectFuture[ShardJob] = plan_shards.submit(
        model, identity, data, settings, origin, flow_run.id, replace_origin
    )
    return run_on_dask(score_shards_flow, settings, "score-shards", job)


def run_on_dask(subflow: Any, settings: Settings, label: str, job: Any) -> Any:
    """Run ``subflow(job)`` on prefect-dask's ``DaskTaskRunner`` for the configured cluster,
    named after the batch forecast's run ("<label> of <run name>"). Workers that keep
    dying on a task (``KilledWorker``) become :class:`WorkersLost` saying what to change."""
    from distributed import KilledWorker
    from prefect_dask import DaskTaskRunner

    runner = DaskTaskRunner(**cluster_arguments(settings.compute))
    name = f"{label} of {flow_run.name or 'batch-forecast'}"
    configured = subflow.with_options(task_runner=runner, flow_run_name=lambda: name)
    try:
        return configured(job)
    except KilledWorker as exc:
        raise WorkersLost(lost_workers_message(exc, settings.compute)) from exc
