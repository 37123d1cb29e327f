"""One retrain per model at a time: a lease row in the warehouse, no Prefect.

A deployment's ``concurrency_limit`` only serialises runs of that deployment; a
``salesflow retrain`` from a terminal is a flow run of its own. Every retrain therefore
takes this lock, keyed by model name, in the warehouse both already use:

* :func:`acquire_lock` deletes an *expired* row of the model and inserts a new one in one
  transaction. The primary key on ``model_name`` makes the INSERT the atomic step: of two
  concurrent callers one inserts, the other gets an integrity error and raises
  :class:`LockHeld` naming the holder (SQLite serialises writers with ``BEGIN IMMEDIATE``;
  on PostgreSQL the second INSERT waits for the first transaction, then conflicts).
* :func:`release_lock` deletes the row only if this holder still owns it.
* A lease expires after ``lease_seconds``, so a crashed run (kill -9, lost host) blocks
  others at most that long.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from salesflow.errors import UserError
from salesflow.storage.sqlengine import check_identifier, connect, open_engine
from salesflow.storage.sqlstore import ensure_table


class LockHeld(UserError):
    """Another run holds the model's lock (one line, never retried: wait or end that run)."""


@dataclass(frozen=True)
class Lease:
    """A held lock: release it with :func:`release_lock` (or use :func:`model_lock`)."""

    url: str
    table: str
    schema: str | None
    model_name: str
    holder: str
    acquired_at: dt.datetime
    expires_at: dt.datetime


def lock_table(name: str = "model_locks", schema: str | None = None) -> sa.Table:
    """One row per locked model: ``model_name`` (primary key), holder, acquired/expires at."""
    check_identifier(name, "table")
    if schema is not None:
        check_identifier(schema, "schema")
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("model_name", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )


def describe_holder(flow_run_id: str | None = None) -> str:
    """Who takes the lock: the flow run (if any), the OS user, host and process id."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    run = f"flow run {flow_run_id}, " if flow_run_id else ""
    return f"{run}{user}@{socket.gethostname()} pid {os.getpid()}"


def _utc(value: Any) -> dt.datetime:
    # SQLite hands back naive datetimes (stored as UTC text); PostgreSQL aware ones.
    at = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stored(at: dt.datetime, dialect: str) -> dt.datetime:
    # SQLite stores text without the offset: keep every value in UTC so text order is time order.
    return at.replace(tzinfo=None) if dialect == "sqlite" else at


def acquire_lock(
    url: str,
    model_name: str,
    holder: str,
    lease_seconds: float,
    table_name: str = "model_locks",
    schema: str | None = None,
) -> Lease:
    """Take the lock of ``model_name`` for ``lease_seconds``, or raise :class:`LockHeld`.

    An expired lease of another holder is taken over (its row is replaced).
    :class:`~salesflow.sqlengine.WarehouseUnavailable` when the warehouse cannot be reached.
    """
    table = lock_table(table_name, schema)
    now = _now()
    expires = now + dt.timedelta(seconds=lease_seconds)
    with open_engine(url, write=True) as engine:
        with connect(engine, url):
            pass
        ensure_table(engine, table)
        d = engine.dialect.name
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.delete(table).where(
                        table.c.model_name == model_name, table.c.expires_at < _stored(now, d)
                    )
                )
                conn.execute(
                    sa.insert(table).values(
                        model_name=model_name,
                        holder=holder,
                        acquired_at=_stored(now, d),
                        expires_at=_stored(expires, d),
                    )
                )
        except sa.exc.IntegrityError:
            with connect(engine, url) as conn:
                row = conn.execute(sa.select(table).where(table.c.model_name == model_name)).first()
            if row is None or row.holder != holder:
                raise _held(row, table, model_name) from None
            # Ours already: a retried acquire of the same run (the first attempt committed).
            now, expires = _utc(row.acquired_at), _utc(row.expires_at)
    return Lease(url, table_name, schema, model_name, holder, now, expires)


def _held(row: Any, table: sa.Table, model_name: str) -> LockHeld:
    if row is None:  # released between our INSERT and this read
        return LockHeld(f"the lock of model {model_name!r} was busy; run the retrain again")
    return LockHeld(
        f"another retrain of model {model_name!r} is running: {row.holder}, since "
        f"{_utc(row.acquired_at):%Y-%m-%d %H:%M:%S} UTC (lease until "
        f"{_utc(row.expires_at):%H:%M:%S} UTC); wait for it to end, or delete its row from "
        f"table {table.name!r} if that run is gone"
    )


def release_lock(lease: Lease) -> bool:
    """Give the lock back; True if this holder still held it (False: it expired and another
    run took it over, which is left alone)."""
    table = lock_table(lease.table, lease.schema)
    with open_engine(lease.url, write=True) as engine, engine.begin() as conn:
        gone = conn.execute(
            sa.delete(table).where(
                table.c.model_name == lease.model_name, table.c.holder == lease.holder
            )
        )
    return bool(gone.rowcount)


def read_lock(
    url: str, model_name: str, table_name: str = "model_locks", schema: str | None = None
) -> dict[str, Any] | None:
    """The lock row of ``model_name`` (holder, acquired_at, expires_at in UTC), or None."""
    table = lock_table(table_name, schema)
    with open_engine(url) as engine, connect(engine, url) as conn:
        if not sa.inspect(conn).has_table(table.name, schema=schema):
            return None
        row = conn.execute(sa.select(table).where(table.c.model_name == model_name)).first()
    if row is None:
        return None
    return {
        "holder": row.holder,
        "acquired_at": _utc(row.acquired_at),
        "expires_at": _utc(row.expires_at),
    }


@contextmanager
def model_lock(
    url: str,
    model_name: str,
    holder: str,
    lease_seconds: float,
    table_name: str = "model_locks",
    schema: str | None = None,
) -> Iterator[Lease]:
    """``with model_lock(...):`` holds the lock for the block and releases it after."""
    lease = acquire_lock(url, model_name, holder, lease_seconds, table_name, schema)
    try:
        yield lease
    finally:
        release_lock(lease)
