"""Engines and connections to the warehouse database (PostgreSQL or SQLite): identifier
checks, URL redaction, SQLite locking pragmas, and one clear error when it cannot be reached.

Engines are created per call and disposed after. URLs are only ever logged or returned
through :func:`redact_url`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from salesflow.config.identifiers import check_identifier

__all__ = [
    "SUPPORTED",
    "WarehouseUnavailable",
    "check_connection",
    "check_identifier",
    "connect",
    "open_engine",
    "redact_url",
    "sqlite_path",
]

_SQLITE_BUSY_MS = 30_000
_PG_CONNECT_TIMEOUT_S = 10
SUPPORTED = ("postgresql", "sqlite")


class WarehouseUnavailable(ConnectionError):
    """The warehouse database cannot be reached; the message never holds a password."""


def redact_url(url: str | sa.URL) -> str:
    """The URL with its password replaced by ``***`` (safe to log)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other backends, in-memory and ``file:`` URIs."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    return None if u.database.startswith("file:") else Path(u.database)


@contextmanager
def open_engine(url: str, *, write: bool = False) -> Iterator[Engine]:
    """An engine for ``url``, disposed on exit. PostgreSQL gets a connect timeout; SQLite
    gets WAL and a busy timeout, and with ``write`` its folder is created and every
    transaction takes the write lock at BEGIN."""
    u = make_url(url)
    kwargs: dict[str, Any] = {}
    if u.get_backend_name() == "postgresql" and "connect_timeout" not in u.query:
        kwargs["connect_args"] = {"connect_timeout": _PG_CONNECT_TIMEOUT_S}
    if write and (path := sqlite_path(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(u, future=True, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, immediate=write)
    try:
        yield engine
    finally:
        engine.dispose()


def _configure_sqlite(engine: Engine, *, immediate: bool) -> None:
    # pysqlite's implicit BEGIN skips DDL and starts late; emit our own so a write is one
    # transaction that holds the write lock from its start (SQLAlchemy's documented recipe).
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
        _use_wal(cur)
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _use_wal(cur: Any) -> None:
    # WAL is stored in the file: set it once. Switching needs an exclusive lock that SQLite
    # may refuse at once ("database is locked") without waiting on busy_timeout when other
    # connections open a new file at the same moment, so the switch is retried here.
    if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + _SQLITE_BUSY_MS / 1000
    pause = 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _unavailable(url: str, exc: sa.exc.DBAPIError) -> WarehouseUnavailable:
    reason = (str(exc.orig).strip().splitlines() or ["unknown error"])[0]
    password = make_url(url).password
    if password:
        reason = reason.replace(str(password), "***")
    return WarehouseUnavailable(f"cannot reach the warehouse at {redact_url(url)}: {reason}")


@contextmanager
def connect(engine: Engine, url: str) -> Iterator[Connection]:
    """A connection of ``engine``; :class:`WarehouseUnavailable` (password redacted) if the
    database cannot be reached."""
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as exc:
        raise _unavailable(url, exc) from None
    with conn:
        yield conn


def check_connection(url: str) -> None:
    """Raise :class:`WarehouseUnavailable` unless the warehouse answers ``SELECT 1``.

    A SQLite file that does not exist yet counts as reachable: the first write creates it.
    """
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return
    with open_engine(url) as engine, connect(engine, url) as conn:
        try:
            conn.exec_driver_sql("SELECT 1")
        except sa.exc.DBAPIError as exc:
            raise _unavailable(url, exc) from None
