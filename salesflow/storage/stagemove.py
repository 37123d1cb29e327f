"""Inside :func:`salesflow.storage.staging.commit_stage`: moving a stage's rows into the
forecasts table, in the caller's transaction, with ``write_forecasts``' counts.

PostgreSQL: an exclusive lock on the stage (its stagers hold it shared), the partitions'
locks, one counted ``DELETE`` per partition joined with the staged keys
(:func:`salesflow.storage.pgreplace.delete_counted`), then ``INSERT ... SELECT`` (each
shard was staged in key order: cheaper for the key's index than a server-side sort).
SQLite: ``INSERT ... SELECT ... ON CONFLICT`` from the stage, then the partitions replaced
as ``write_forecasts`` does (:func:`salesflow.storage.sqlreplace.replace_partitions`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from salesflow.storage import pgreplace, sqlstore
from salesflow.storage.forecast_runs import RunContext
from salesflow.storage.sqlconvert import convert, qualified
from salesflow.storage.sqlreplace import Replaced, replace_partitions
from salesflow.storage.warehouse import FORECAST_KEY, RUN_COLUMNS

_PARTITION = ("model_name", "forecast_origin")
_KEYS = pgreplace.Keys(_PARTITION, "unique_id", "target_date")


def move_postgres(
    conn: Connection,
    target: sa.Table,
    stage: sa.Table,
    stage_id: str,
    keep_absent: bool,
    ctx: RunContext,
) -> tuple[dict[str, Any], pd.DataFrame]:
    lock_stage(conn, stage, stage_id)  # waits for the stagers of stage_id that are running
    q = conn.dialect.identifier_preparer
    src = q.format_table(stage)
    cur = pgreplace.cursor(conn)
    cur.execute(
        f"SELECT model_name, forecast_origin, count(*) FROM {src} WHERE stage_id = %s "
        "GROUP BY 1, 2",
        (stage_id,),
    )
    parts = [(m, o) for m, o, _ in cur.fetchall()]
    if not parts:
        return {}, pd.DataFrame()
    pgreplace.lock_partitions(conn, target, parts)
    updated, replaced = 0, Replaced()
    for part in parts:
        ctes = (
            f"fk AS MATERIALIZED (SELECT unique_id AS member, target_date AS rest FROM {src} "
            "WHERE stage_id = %s AND model_name = %s AND forecast_origin = %s), "
            "fm AS (SELECT DISTINCT member FROM fk)"
        )
        n, done = pgreplace.delete_counted(
            conn, target, _KEYS, part, keep_absent, ctes, [stage_id, *part]
        )
        updated, replaced = updated + n, pgreplace.merge(replaced, done)
    cols = [c.name for c in target.columns]
    stamped = {"created_at": dt.datetime.now(dt.UTC), "forecast_run_id": ctx.run_id}
    picks = ", ".join("%s" if c in stamped else q.quote(c) for c in cols)
    cur.execute(
        f"INSERT INTO {q.format_table(target)} ({', '.join(q.quote(c) for c in cols)}) "
        f"SELECT {picks} FROM {src} WHERE stage_id = %s",
        (*(stamped[c] for c in cols if c in stamped), stage_id),
    )
    written = int(cur.rowcount)
    return _counts(written, updated, replaced), _summary(conn, stage, stage_id)


def _summary(conn: Connection, stage: sa.Table, stage_id: str) -> pd.DataFrame:
    """The staged rows' distinct run-level values (attrs["series"]: distinct series)."""
    src = conn.dialect.identifier_preparer.format_table(stage)
    where = {"sid": stage_id}
    cols = ", ".join(RUN_COLUMNS)
    rows = conn.execute(sa.text(f"SELECT DISTINCT {cols} FROM {src} WHERE stage_id = :sid"), where)
    summary = pd.DataFrame([tuple(r) for r in rows], columns=list(RUN_COLUMNS))
    count = sa.text(f"SELECT count(DISTINCT unique_id) FROM {src} WHERE stage_id = :sid")
    summary.attrs["series"] = int(conn.execute(count, where).scalar_one())
    return summary


def move_sqlite(
    conn: Connection,
    target: sa.Table,
    stage: sa.Table,
    stage_id: str,
    keep_absent: bool,
    ctx: RunContext,
) -> tuple[dict[str, Any], pd.DataFrame]:
    # write_forecasts' SQLite path, in SQL: upsert from the stage, then replace partitions.
    q = conn.dialect.identifier_preparer
    src, key = q.format_table(stage), list(FORECAST_KEY)
    cur = pgreplace.cursor(conn)
    parts = cur.execute(
        f"SELECT model_name, forecast_origin, count(*) FROM {src} WHERE stage_id = ? GROUP BY 1, 2",
        (stage_id,),
    ).fetchall()
    if not parts:
        return {}, pd.DataFrame()
    keys = ", ".join(q.quote(k) for k in key)
    dup = cur.execute(
        f"SELECT {keys} FROM {src} WHERE stage_id = ? GROUP BY {keys} HAVING count(*) > 1",
        (stage_id,),
    ).fetchone()
    if dup is not None:
        raise duplicate_keys(stage_id, dict(zip(key, dup, strict=True)))
    names = [c.name for c in target.columns]
    table, cols, _, conflict = sqlstore._sql_parts(conn, target, names, key)
    stamped = {"created_at": db_now("sqlite"), "forecast_run_id": ctx.run_id}
    picks = ", ".join("?" if c in stamped else q.quote(c) for c in names)
    before = cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    cur.execute(
        f"INSERT INTO {table} ({cols}) SELECT {picks} FROM {src} WHERE stage_id = ? {conflict}",
        (*(stamped[c] for c in names if c in stamped), stage_id),
    )
    # BEGIN IMMEDIATE holds the write lock, so the growth of the table is our inserts.
    inserted = cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0] - before
    by_part = [
        [m for m, _, _ in parts],
        [o for _, o, _ in parts],
        [stamped["created_at"]] * len(parts),
    ]
    replaced = replace_partitions(
        conn, target, [*_PARTITION, "created_at"], by_part, _PARTITION, "created_at",
        "unique_id", keep_absent,
    )  # fmt: skip
    written = sum(int(n) for _, _, n in parts)
    return _counts(written, written - inserted, replaced), _summary(conn, stage, stage_id)


def _counts(written: int, updated: int, replaced: Replaced) -> dict[str, Any]:
    return {
        "rows_written": written,
        "rows_inserted": written - updated,
        "rows_updated": updated,
        "rows_deleted": replaced.deleted,
        "removed": replaced.removed,
        "kept": replaced.kept,
    }


def db_now(dialect: str) -> Any:
    """Now (UTC) as the driver stores a timestamp column on ``dialect``."""
    now = pd.Series([pd.Timestamp.now(tz="UTC")])
    return convert(now, sa.DateTime(timezone=True), dialect)[0]


def lock_stage(conn: Connection, stage: sa.Table, name: str, shared: bool = False) -> None:
    """Take the transaction-level advisory lock ``name`` of the staging table (PostgreSQL)."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    pgreplace.cursor(conn).execute(
        f"SELECT {fn}(hashtextextended(%s, 0))", (f"salesflow:{qualified(stage)}:{name}",)
    )


def duplicate_keys(stage_id: str, example: Any) -> ValueError:
    """The error for a key staged by two shards of ``stage_id``."""
    return ValueError(
        f"staged shards of stage {stage_id!r} hold the same key more than once (e.g. "
        f"{example}): each series may be in one shard only"
    )
