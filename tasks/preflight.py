"""Preflight steps: settings, environment and settings x data checks before any work."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from salesflow.commands.preflight import check_before_run, check_data_fits, set_mlflow_http_limits
from salesflow.config.settings import Settings
from salesflow.data.schema import SalesData
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.registry import check_champion_fits
from tasks import TRANSIENT_IO_RETRIES


@task(name="preflight-checks", **TRANSIENT_IO_RETRIES, cache_policy=NO_CACHE)
def check_run(settings: Settings, command: str) -> None:
    """Settings and environment (folders writable, MLflow answering, data files and their
    columns) before any work; a PreflightError (a user error) lists every problem. An MLflow
    server that does not answer (and nothing else wrong) is transient: retried."""
    set_mlflow_http_limits()
    check_before_run(settings, command, servers_transient=True)
    get_run_logger().info("Preflight checks passed for %s", command)


@task(name="check-data-fits", cache_policy=NO_CACHE)
def check_data(
    settings: Settings,
    data: SalesData,
    command: str,
    champion: GlobalForecaster | None = None,
    champion_version: str | None = None,
) -> None:
    """Settings x validated data (backtest fits the history, ids fit the warehouse) and,
    given a champion, that it was trained on data of this shape; before features or fits."""
    check_data_fits(settings, data, command)
    if champion is not None:
        check_champion_fits(champion, data, champion_version or "?")
