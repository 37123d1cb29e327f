"""The model lock around a run that may move the champion alias (see salesflow.locks)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from salesflow.config.settings import Settings
from salesflow.storage.locks import Lease, acquire_lock, describe_holder, release_lock
from tasks import TRANSIENT_IO_RETRIES


@task(
    name="acquire-model-lock",
    **TRANSIENT_IO_RETRIES,
    cache_policy=NO_CACHE,
)
def acquire_model_lock(settings: Settings) -> Lease:
    """Take the model's lock in the warehouse, or fail at once naming its holder."""
    lease = acquire_lock(
        settings.warehouse_url,
        settings.model.name,
        describe_holder(flow_run.id),
        settings.policy.lock_lease_seconds,
        settings.policy.lock_table,
        settings.warehouse.schema_name,
    )
    get_run_logger().info(
        "Holding the lock of %s until %s at the latest", lease.model_name, lease.expires_at
    )
    return lease


@task(
    name="release-model-lock",
    **TRANSIENT_IO_RETRIES,
    cache_policy=NO_CACHE,
)
def release_model_lock(lease: Lease) -> None:
    """Give the lock back (left alone if it expired and another run took it)."""
    if not release_lock(lease):
        get_run_logger().warning(
            "The lock of %s had expired and was taken over before this run released it",
            lease.model_name,
        )
