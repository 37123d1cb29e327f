"""Ingestion step: read the configured source into the canonical SalesData."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from salesflow.config.settings import DataSection
from salesflow.data.schema import SalesData
from salesflow.data.sources import load_sales
from salesflow.modelling.report import data_summary
from tasks import TRANSIENT_IO_RETRIES


@task(
    name="ingest-sales",
    **TRANSIENT_IO_RETRIES,
    cache_policy=NO_CACHE,
)
def ingest_sales(cfg: DataSection) -> SalesData:
    """Read sales history and known future covariates from ``cfg.source``; retried only
    on transient I/O (a source, mapping or format error is a user error: never retried)."""
    data = load_sales(cfg)
    get_run_logger().info("Ingested %s", data_summary(data).replace("**", ""))
    return data
