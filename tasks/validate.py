"""Validation gate: Great Expectations checks; a failure stops the flow before features."""

from __future__ import annotations

import datetime as dt

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from salesflow.config.settings import ValidationSection
from salesflow.data.schema import SalesData
from salesflow.data.validation import DataValidationError, drop_short_series, validate_sales
from salesflow.data.validation_report import ValidationReport


@task(name="validate-sales", cache_policy=NO_CACHE)
def validate_data(
    data: SalesData,
    cfg: ValidationSection,
    as_of: dt.date | None = None,
    horizon: int | None = None,
) -> SalesData:
    """Run the gate, publish its report, raise on failure; drop (and report) short series.

    ``horizon`` bounds how far after today future covariates may reach."""
    report = validate_sales(data, cfg, as_of, horizon)
    publish_verdict(report, cfg, "Great Expectations validation of the ingested data")
    get_run_logger().info(
        "Validation passed: %d checks on %s rows", len(report.checks), f"{report.n_rows:,}"
    )
    return drop_short_series(data, report)


def publish_verdict(report: ValidationReport, cfg: ValidationSection, description: str) -> None:
    """Publish ``report`` as the run's ``data-validation`` artifact; raise
    DataValidationError when it failed, else warn once about the short series dropped."""
    create_markdown_artifact(
        key="data-validation", markdown=report.to_markdown(), description=description
    )
    if not report.passed:
        raise DataValidationError(report)
    dropped = report.short_series
    if dropped:
        get_run_logger().warning(
            "Dropped %d series with fewer than %d observations: %s",
            len(dropped),
            cfg.min_history,
            ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""),
        )
