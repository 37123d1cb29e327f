"""PostgreSQL for the tests: its URL, skip-or-fail when it is down, dropping test tables."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get(
    "SALESFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_or_skip(url: str = PG_URL) -> None:
    """Skip the test when PostgreSQL is unreachable; fail instead when CI=true."""
    from salesflow.storage.sqlstore import WarehouseUnavailable, check_connection

    try:
        check_connection(url)
    except WarehouseUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required when CI=true but is unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable ({exc}); start it or set SALESFLOW_TEST_PG_URL")


def drop_table(url: str, table: str) -> None:
    """DROP TABLE IF EXISTS (a test's uniquely named table)."""
    engine = sa.create_engine(url, future=True)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        engine.dispose()
