"""Staged forecast writes for sharded scoring: many shards staged, one commit.

Scoring in shards (e.g. one Dask task per shard of series) writes each shard's rows with
:func:`stage_forecasts` into a staging table (``<table>_stage``), tagged with the run's
``stage_id`` and the shard's name; once every shard is staged, one :func:`commit_stage`
moves them into the forecasts table. How the promises of :func:`write_forecasts` hold:

* **All or nothing.** The forecasts table and the runs table change only in
  :func:`commit_stage`'s one transaction: it replaces the partitions (model, origin)
  exactly as ``write_forecasts`` would with all the staged rows as one frame (same
  ``WriteResult``: added, replaced, removed, ``kept`` / ``removed`` series), appends the
  runs row and deletes the staged rows of ``stage_id``. An error anywhere rolls it all
  back: the table is as before and the staged rows are still there for a retry.
* **Idempotence.** Staging a shard first deletes what that (stage_id, shard) staged
  before, in the same transaction, so a retried or rescheduled shard never duplicates its
  rows; on PostgreSQL an advisory lock per (stage_id, shard) serialises two attempts of
  the same shard running at once. Committing replaces the origin's rows, so committing the
  same rows again (a rerun with a new stage_id) gives the same table. The runs row names
  its ``stage_id``: a commit retried after its first attempt committed (the database's
  acknowledgement lost) finds the stage empty and reports that commit, not 0 rows.
* **Leftovers.** A run that crashes before its commit leaves staged rows: the next run
  with the same ``stage_id`` replaces them shard by shard, :func:`drop_stage` removes a
  stage (an aborted run), :func:`drop_stale_stages` those staged longer ago than an age.
  A commit takes an exclusive lock on its stage that stagers of it share, so it never
  sees half of a shard.

On PostgreSQL shards are COPYed in binary and the commit moves them server-side
(``DELETE`` of the replaced rows counted against the staged keys, then ``INSERT ...
SELECT``); on SQLite the commit reads the staged rows back and writes them as
``write_forecasts`` does. Several processes may stage into one SQLite file at once: each
staging transaction takes the write lock at BEGIN and waits for it up to the engine's busy
timeout.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from salesflow.storage import pgreplace, sqlstore
from salesflow.storage.forecast_runs import (
    DEFAULT_RUNS_TABLE,
    RunContext,
    append_run,
    committed_stage,
    forecast_runs_table,
)
from salesflow.storage.sqlconvert import Values, prepare_frame, qualified
from salesflow.storage.sqlengine import connect, open_engine, redact_url, sqlite_path
from salesflow.storage.sqlschema import ready_postgres
from salesflow.storage.sqlstore import WriteResult, ensure_table
from salesflow.storage.stagemove import (
    db_now,
    duplicate_keys,
    lock_stage,
    move_postgres,
    move_sqlite,
)
from salesflow.storage.warehouse import (
    DEFAULT_TABLE,
    FORECAST_KEY,
    _run_row,
    _too_long_id,
    _with_defaults,
    forecasts_table,
)

__all__ = ["commit_stage", "drop_stage", "drop_stale_stages", "stage_forecasts", "stage_table"]

_PARTITION = ("model_name", "forecast_origin")
_KEYS = pgreplace.Keys(_PARTITION, "unique_id", "target_date")
_TAGS = ("stage_id", "shard", "staged_at")


def _after_move() -> None:
    """Called in commit_stage after the rows moved; tests monkeypatch it to inject a fault."""


def stage_table(table: str = DEFAULT_TABLE, schema: str | None = None) -> sa.Table:
    """The staging table of forecasts table ``table``: its columns (all nullable) plus
    ``stage_id``, ``shard`` and ``staged_at``; indexed on (stage_id, shard), no key."""
    target = forecasts_table(table, schema)
    name = f"{table}_stage"[:63]
    return sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c.name, c.type, nullable=True) for c in target.columns),
        sa.Column("stage_id", sa.Text, nullable=False),
        sa.Column("shard", sa.Text, nullable=False),
        sa.Column("staged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"ix_{name}_stage"[:63], "stage_id", "shard"),
        schema=schema,
    )


def stage_forecasts(
    url: str,
    rows: pd.DataFrame,
    stage_id: str,
    shard: str,
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
    chunk_rows: int = 50_000,
) -> int:
    """Stage one shard's forecast rows under ``stage_id``; return the number staged.

    ``rows``: the columns of :func:`~salesflow.storage.warehouse.write_forecasts`' frame.
    Re-staging the same (stage_id, shard) replaces that shard's staged rows (one
    transaction), so a retried shard never duplicates. Nothing reaches the forecasts table
    before :func:`commit_stage`. Raises ``ValueError`` for an invalid frame (as
    ``write_forecasts``), :class:`WarehouseUnavailable` when the database cannot be reached.
    """
    _check_tag(stage_id, "stage_id")
    _check_tag(shard, "shard")
    dialect = make_url(url).get_backend_name()
    frame = _in_key_order(_with_defaults(rows))
    names, values = prepare_frame(
        frame, forecasts_table(table, schema), list(FORECAST_KEY), dialect
    )
    staged_at = db_now(dialect)
    names = [*names, *_TAGS]
    values = [*values, *([v] * len(frame) for v in (stage_id, shard, staged_at))]
    stage = stage_table(table, schema)
    with open_engine(url, write=True) as engine:
        _ensure(engine, url, stage)
        with engine.begin() as conn:
            if dialect == "postgresql":
                lock_stage(conn, stage, stage_id, shared=True)
                lock_stage(conn, stage, json.dumps([stage_id, shard]))
            conn.execute(stage.delete().where(_of(stage, stage_id), stage.c.shard == shard))
            if len(frame):
                _insert(conn, stage, names, values, chunk_rows)
    return len(frame)


def commit_stage(
    url: str,
    stage_id: str,
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
    *,
    replace_origin: bool = False,
    runs_table: str | None = DEFAULT_RUNS_TABLE,
    context: RunContext | None = None,
    chunk_rows: int = 50_000,
) -> WriteResult:
    """Move every staged row of ``stage_id`` into the forecasts table in one transaction.

    Same semantics and result as ``write_forecasts`` of all those rows as one frame
    (``replace_origin``, ``kept`` / ``removed``, the runs row in the same transaction), and
    the staged rows are deleted in that transaction. A stage with no rows writes nothing
    and records no run; when the runs table holds a commit of ``stage_id`` (a retry whose
    first attempt committed, its acknowledgement lost), the result repeats that commit's
    counts, with ``committed_by`` its run id. Raises ``ValueError`` when two shards staged
    the same key, :class:`SeriesIdTooLong` as ``write_forecasts``.
    """
    _check_tag(stage_id, "stage_id")
    ctx = replace(context or RunContext(), stage_id=stage_id)
    target, stage = forecasts_table(table, schema), stage_table(table, schema)
    runs = None if runs_table is None else forecast_runs_table(runs_table, schema)
    dialect = make_url(url).get_backend_name()
    start = time.perf_counter()
    base = WriteResult(0, 0, 0, 0.0, qualified(target), redact_url(url))
    with open_engine(url, write=True) as engine:
        _ensure(engine, url, stage)
        ensure_table(engine, target, FORECAST_KEY)
        if runs is not None:
            ensure_table(engine, runs)
        move = move_postgres if dialect == "postgresql" else move_sqlite
        try:
            with engine.begin() as conn:
                counts, summary = move(conn, target, stage, stage_id, not replace_origin, ctx)
                result = replace(base, **counts, seconds=time.perf_counter() - start)
                if result.rows_written:
                    _after_move()
                    if runs is not None:
                        row = _run_row(
                            summary, result, ctx, qualified(target), replace_origin,
                            n_series=summary.attrs["series"],
                        )  # fmt: skip
                        append_run(conn, runs, row)
                    conn.execute(stage.delete().where(_of(stage, stage_id)))
                elif runs is not None:  # nothing staged: committed by an earlier attempt?
                    earlier = committed_stage(conn, runs, stage_id)
                    if earlier is not None:
                        result = replace(
                            earlier, table=result.table, url_redacted=result.url_redacted
                        )
        except Exception as exc:
            error = _user_error(exc, engine, target, stage, stage_id)
            if error is None:
                raise
            raise error from None
    result = replace(result, seconds=time.perf_counter() - start)
    if result.committed_by:  # a retry whose first attempt committed (its ack was lost)
        sqlstore.log.warning(
            "stage %s was committed already (forecast run %s, %d rows): nothing written again",
            stage_id, result.committed_by, result.rows_written,
        )  # fmt: skip
        return result
    if not result.rows_written:  # never staged, or dropped
        sqlstore.log.warning("stage %s has no staged rows: nothing written", stage_id)
        return result
    sqlstore.log.info(
        "committed stage %s: %d rows (%d new, %d updated, %d deleted) to %s in %.2f s",
        stage_id, result.rows_written, result.rows_inserted, result.rows_updated,
        result.rows_deleted, result.table, result.seconds,
    )  # fmt: skip
    return result


def drop_stage(
    url: str, stage_id: str, table: str = DEFAULT_TABLE, schema: str | None = None
) -> int:
    """Delete the staged rows of ``stage_id`` (an aborted run); return how many."""
    _check_tag(stage_id, "stage_id")
    stage = stage_table(table, schema)
    return _delete(url, stage, _of(stage, stage_id))


def drop_stale_stages(
    url: str,
    older_than: dt.timedelta,
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
) -> int:
    """Delete staged rows staged more than ``older_than`` ago (crashed runs); how many."""
    stage = stage_table(table, schema)
    cutoff = dt.datetime.now(dt.UTC) - older_than
    return _delete(url, stage, stage.c.staged_at < cutoff)


# --- helpers ------------------------------------------------------------------------------


def _check_tag(value: str, what: str) -> None:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError(f"{what} must be a non-empty string without NUL bytes, got {value!r}")


def _in_key_order(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by the forecasts key: the commit then inserts each shard's rows
    into the key's index page after page (cheaper than a server-side sort of the stage)."""
    if frame.empty or not set(FORECAST_KEY) <= set(frame.columns):
        return frame  # prepare_frame names what is missing
    codes = [pd.factorize(frame[c], sort=True)[0] for c in reversed(FORECAST_KEY)]
    order = np.lexsort(codes)
    return frame if bool((np.diff(order) > 0).all()) else frame.take(order)


def _of(stage: sa.Table, stage_id: str) -> Any:
    return stage.c.stage_id == stage_id


def _ensure(engine: Engine, url: str, stage: sa.Table) -> None:
    """Create the staging table if missing (its shape is ours: no migration needed)."""
    with connect(engine, url):  # surfaces an unreachable database as WarehouseUnavailable
        pass
    if engine.dialect.name == "postgresql" and ready_postgres(engine, stage, []):
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"salesflow:{qualified(stage)}",)
            )
            if stage.schema:
                quoted = conn.dialect.identifier_preparer.quote_schema(stage.schema)
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        stage.create(conn, checkfirst=True)


def _insert(
    conn: Connection, stage: sa.Table, names: list[str], values: Values, chunk_rows: int
) -> None:
    if conn.dialect.name == "postgresql":
        pgreplace.copy_rows(conn, stage, names, values, chunk_rows, sqlstore._call_after_chunk)
        return
    q = conn.dialect.identifier_preparer
    cols = ", ".join(q.quote(n) for n in names)
    sql = f"INSERT INTO {q.format_table(stage)} ({cols}) VALUES ({', '.join('?' for _ in names)})"
    cur = pgreplace.cursor(conn)
    for i, start in enumerate(range(0, len(values[0]), chunk_rows)):
        cur.executemany(sql, zip(*(v[start : start + chunk_rows] for v in values), strict=True))
        sqlstore._call_after_chunk(i)


def _delete(url: str, stage: sa.Table, where: Any) -> int:
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return 0
    with open_engine(url, write=True) as engine:
        with connect(engine, url):  # surfaces an unreachable database as WarehouseUnavailable
            pass
        with engine.begin() as conn:
            if not sa.inspect(conn).has_table(stage.name, schema=stage.schema):
                return 0
            return int(conn.execute(stage.delete().where(where)).rowcount)


def _user_error(
    exc: Exception, engine: Engine, target: sa.Table, stage: sa.Table, stage_id: str
) -> Exception | None:
    """The user error behind a failed commit (duplicate keys, too long an id), else None."""
    state = getattr(getattr(exc, "orig", exc), "sqlstate", None)
    if state == "23505":  # unique violation: two shards staged one key
        return duplicate_keys(stage_id, str(getattr(exc, "orig", exc)).splitlines()[-1])
    if state == "54000":  # an index row too long: a series id the key index cannot hold
        with engine.connect() as conn:
            longest = conn.execute(
                sa.select(stage.c.unique_id)
                .where(_of(stage, stage_id))
                .order_by(sa.func.length(stage.c.unique_id).desc())
                .limit(1)
            ).scalar_one()
        return _too_long_id(str(longest), target)
    return None
