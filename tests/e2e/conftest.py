"""End-to-end fixtures: PostgreSQL (or a skip), an isolated environment, background processes.

Every process started here (Prefect server, worker) is registered with :func:`processes` and
stopped at the end of the session in reverse start order: the worker with SIGINT (it ignores
SIGTERM), the server with SIGTERM, each killed if it outlives its grace period.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .procs import Processes
from .stack import Stack, start_stack

PG_URL = os.environ.get(
    "SALESFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TIMINGS: dict[str, float] = {}  # step -> seconds, printed in the terminal summary


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if TIMINGS:
        terminalreporter.section("e2e timings")
        for step, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:7.1f} s  {step}")


@pytest.fixture(scope="session")
def e2e_timings() -> dict[str, float]:
    """Seconds per step of the end-to-end run, shown after the tests."""
    return TIMINGS


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL test URL; skip when unreachable, unless CI=true (then fail)."""
    from salesflow.storage.warehouse import WarehouseUnavailable, check_connection

    try:
        check_connection(PG_URL)
    except WarehouseUnavailable as exc:
        reason = f"PostgreSQL is unreachable: {exc} (start it, or set SALESFLOW_TEST_PG_URL)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return PG_URL


@pytest.fixture(scope="session")
def e2e_table(pg_url: str) -> Iterator[str]:
    """A warehouse table of this session only, dropped at its end."""
    import sqlalchemy as sa

    table = f"sales_forecasts_e2e_{uuid.uuid4().hex[:8]}"
    yield table
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's scratch folder: Prefect home and database, MLflow, logs."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def processes() -> Iterator[Processes]:
    """Start background processes; all are stopped (last started first) at session end."""
    procs = Processes()
    yield procs
    for bg in reversed(procs.started):
        TIMINGS[f"stop {bg.name}"] = bg.stop()


@pytest.fixture(scope="session")
def stack(
    pg_url: str,
    e2e_table: str,
    e2e_dir: Path,
    processes: Processes,
    e2e_timings: dict[str, float],
) -> Stack:
    """A real Prefect server with the deployments of deployments/prefect.yaml and a worker,
    shared by every e2e module."""
    return start_stack(pg_url, e2e_table, e2e_dir, processes, e2e_timings)
