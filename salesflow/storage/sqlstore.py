"""Generic transactional upserts and reads of a SQLAlchemy Table, on PostgreSQL and SQLite.

:func:`write_frame` is generic over a Table and its key columns. A write is one
transaction. On PostgreSQL, a write that replaces partitions with a member column (as
``write_forecasts`` does: one model's origin, series by series) locks each partition,
deletes the rows it replaces and COPYs its rows straight into the table
(:mod:`salesflow.storage.pgreplace`); any other PostgreSQL write loads a temporary staging
table with binary ``COPY`` and then runs ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``.
SQLite runs an ``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE`` under
``BEGIN IMMEDIATE``. Any error rolls it all back.
Tables are created, or migrated (missing nullable columns added), before the write.

Engines, connections and URL redaction are in :mod:`salesflow.sqlengine`, table creation
and migration in :mod:`salesflow.storage.sqlschema` (both re-exported).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from salesflow.storage import pgreplace
from salesflow.storage.sqlconvert import Values, bind, from_db, prepare_frame, qualified
from salesflow.storage.sqlengine import (
    SUPPORTED,
    WarehouseUnavailable,
    check_connection,
    check_identifier,
    connect,
    open_engine,
    redact_url,
    sqlite_path,
)
from salesflow.storage.sqlreplace import Replaced, replace_partitions
from salesflow.storage.sqlschema import WarehouseSchemaError, ensure_table

__all__ = [
    "WarehouseSchemaError",
    "WarehouseUnavailable",
    "WriteResult",
    "check_connection",
    "check_identifier",
    "count_rows",
    "ensure_table",
    "read_frame",
    "redact_url",
    "write_frame",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteResult:
    """What a write did; ``rows_updated`` counts rows whose key already existed."""

    rows_written: int
    rows_inserted: int
    rows_updated: int
    seconds: float
    table: str
    url_redacted: str
    rows_deleted: int = 0  # stale rows of a replaced partition (see write_frame's replace_by)
    # Members (e.g. series) of a replaced partition that the write did not hold: rows per
    # member, deleted (``removed``) or left as they were (``kept``, with keep_absent).
    removed: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    # A staged commit retried after its first attempt committed (the acknowledgement was
    # lost): the forecast_runs run_id of that commit, whose counts this result repeats.
    committed_by: str | None = None


def _after_chunk(i: int) -> None:
    """Called after chunk ``i`` is loaded; tests monkeypatch it to inject a fault mid-write."""


# PostgreSQL writes that replace partitions of a member/key layout (write_forecasts) take
# :mod:`salesflow.storage.pgreplace`'s delete + COPY path; False forces the older
# COPY-to-stage + upsert path (kept for generic tables; benchmarks and tests compare them).
FAST_REPLACE = True
_CHECKED_BY_DB = ("23502", "23505")  # not_null_violation, unique_violation


# --- the generic upsert -------------------------------------------------------------------


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _sql_parts(
    conn: Connection, table: sa.Table, names: list[str], key: list[str]
) -> tuple[str, str, str, str]:
    q = conn.dialect.identifier_preparer
    cols = ", ".join(q.quote(n) for n in names)
    keys = ", ".join(q.quote(k) for k in key)
    sets = ", ".join(f"{q.quote(n)} = excluded.{q.quote(n)}" for n in names if n not in key)
    action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
    return q.format_table(table), cols, keys, f"ON CONFLICT ({keys}) {action}"


def _cursor(conn: Connection) -> Any:
    """The driver's own cursor on ``conn``, inside its transaction (for COPY / executemany)."""
    driver = conn.connection.driver_connection
    assert driver is not None, "connection is closed"
    return driver.cursor()


def _upsert_postgres(
    conn: Connection,
    table: sa.Table,
    names: list[str],
    values: Values,
    key: list[str],
    chunk_rows: int,
) -> int:
    target, cols, keys, conflict = _sql_parts(conn, table, names, key)
    stage = f"_stage_{uuid.uuid4().hex[:16]}"
    cur = _cursor(conn)
    cur.execute(
        f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {target} WITH NO DATA"
    )
    pgreplace.copy_rows(conn, table, names, values, chunk_rows, _call_after_chunk, into=stage)
    # Key order makes the index inserts local (~1.5x faster than stage order). xmax = 0
    # marks a freshly inserted row version; an updated one carries the old version's xmax.
    cur.execute(
        f"WITH up AS (INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage} ORDER BY {keys} "
        f"{conflict} RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted) FROM up"
    )
    return int(cur.fetchone()[0])


def _call_after_chunk(i: int) -> None:
    _after_chunk(i)  # looked up at call time, so that a test's monkeypatch takes effect


def _upsert_sqlite(
    conn: Connection,
    table: sa.Table,
    names: list[str],
    values: Values,
    key: list[str],
    chunk_rows: int,
) -> int:
    target, cols, keys, conflict = _sql_parts(conn, table, names, key)
    marks = ", ".join("?" for _ in names)
    sql = f"INSERT INTO {target} ({cols}) VALUES ({marks}) {conflict}"
    cur = _cursor(conn)
    before = cur.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
    for i, (a, b) in enumerate(_chunks(len(values[0]), chunk_rows)):
        cur.executemany(sql, zip(*(v[a:b] for v in values), strict=True))
        _after_chunk(i)
    # BEGIN IMMEDIATE holds the write lock, so the growth of the table is our inserts.
    return cur.execute(f"SELECT count(*) FROM {target}").fetchone()[0] - before


def write_frame(
    url: str,
    frame: pd.DataFrame,
    table: sa.Table,
    key_columns: Sequence[str] | None = None,
    chunk_rows: int = 50_000,
    replace_by: Sequence[str] | None = None,
    stamp: str | None = None,
    *,
    member: str | None = None,
    keep_absent: bool = False,
    also: Sequence[sa.Table] = (),
    then: Callable[[Connection, WriteResult], None] | None = None,
) -> WriteResult:
    """Upsert ``frame`` into ``table`` on ``key_columns`` (default: its primary key).

    With ``replace_by`` (e.g. model and origin) and ``stamp`` (a column holding one value
    for the whole frame, e.g. created_at), the partitions present in ``frame`` are replaced
    in the same transaction (:func:`salesflow.sqlreplace.replace_partitions`): with a
    ``member`` column (e.g. unique_id) the rows of members absent from ``frame`` are kept
    when ``keep_absent`` (and listed in ``WriteResult.kept``), else deleted (listed in
    ``WriteResult.removed``); without one every row the frame did not write is deleted.

    ``then(conn, result)`` runs last inside the same transaction (e.g. to append a run
    record to one of the tables in ``also``, which are created or migrated first).

    ``frame`` holds a subset of the table's columns: every NOT NULL and key column, no
    column the table lacks. The table is created or migrated first (:func:`ensure_table`);
    the rows are then written in one transaction that an error rolls back entirely.
    Raises ``ValueError`` for an invalid frame, :class:`WarehouseUnavailable` when the
    database cannot be reached.
    """
    key = list(key_columns or table.primary_key.columns.keys())
    if not key or not set(key) <= set(table.c.keys()):
        raise ValueError(f"key columns {key} must be non-empty columns of {qualified(table)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    dialect = make_url(url).get_backend_name()
    if dialect not in SUPPORTED:
        raise ValueError(f"warehouse backend {dialect!r} is not supported; use one of {SUPPORTED}")
    layout, coded = _fast_layout(dialect, key, replace_by, stamp, member), None
    if layout is not None:  # the other chunks are converted while the earlier ones are sent
        prepare_frame(frame.iloc[:0], table, key, dialect)  # missing or extra columns first
        coded = pgreplace.coded_keys(frame, table, layout, str(stamp), dialect)
        if coded is None:  # a null key: prepare_frame names it
            prepare_frame(frame, table, key, dialect)
        elif (order := pgreplace.key_order(coded, key)) is not None:
            frame = frame.take(order)
            coded = {c: replace(v, codes=v.codes[order]) for c, v in coded.items()}
        names, values = prepare_frame(frame.iloc[:chunk_rows], table, key, dialect)
    else:
        names, values = prepare_frame(frame, table, key, dialect)
    start, inserted, replaced = time.perf_counter(), 0, Replaced()
    upsert = _upsert_postgres if dialect == "postgresql" else _upsert_sqlite
    result = WriteResult(0, 0, 0, 0.0, qualified(table), redact_url(url))
    with open_engine(url, write=True) as engine:
        with connect(engine, url):  # surfaces an unreachable database as WarehouseUnavailable
            pass
        ensure_table(engine, table, key_columns=key)
        for extra in also:
            ensure_table(engine, extra)
        if len(frame):
            try:
                with engine.begin() as conn:
                    if layout is not None and coded is not None:
                        chunks = pgreplace.prepared_chunks(
                            frame, table, names, dialect, chunk_rows, values
                        )
                        updated, replaced = pgreplace.replace_by_copy(
                            conn, table, names, chunks, coded, layout, keep_absent,
                            _call_after_chunk,
                        )  # fmt: skip
                        inserted = len(frame) - updated
                    else:
                        if dialect == "postgresql" and replace_by:
                            parts = _partitions(names, values, replace_by)
                            pgreplace.lock_partitions(conn, table, parts)
                        inserted = upsert(conn, table, names, values, key, chunk_rows)
                        if replace_by and stamp:
                            replaced = replace_partitions(
                                conn, table, names, values, replace_by, stamp, member,
                                keep_absent,
                            )  # fmt: skip
                    result = _result(frame, inserted, replaced, start, result)
                    if then is not None:
                        then(conn, result)
            except Exception as exc:
                if layout is not None and getattr(exc, "sqlstate", None) in _CHECKED_BY_DB:
                    # A null or repeated key past the first chunk: name it as upfront.
                    prepare_frame(frame, table, key, dialect)
                raise
    result = replace(result, seconds=time.perf_counter() - start)
    log.info(
        "wrote %d rows (%d new, %d updated, %d deleted) to %s at %s in %.2f s",
        result.rows_written, result.rows_inserted, result.rows_updated, result.rows_deleted,
        result.table, result.url_redacted, result.seconds,
    )  # fmt: skip
    return result


def _fast_layout(
    dialect: str,
    key: list[str],
    replace_by: Sequence[str] | None,
    stamp: str | None,
    member: str | None,
) -> pgreplace.Keys | None:
    """The key layout when this write takes PostgreSQL's delete + COPY path, else None."""
    if dialect != "postgresql" or not FAST_REPLACE or not replace_by or stamp is None:
        return None
    return pgreplace.split_key(key, replace_by, member)


def _partitions(names: list[str], values: Values, cols: Sequence[str]) -> list[tuple[Any, ...]]:
    return list(set(zip(*(values[names.index(c)] for c in cols), strict=True)))


def _result(
    frame: pd.DataFrame, inserted: int, replaced: Replaced, start: float, base: WriteResult
) -> WriteResult:
    return replace(
        base,
        rows_written=len(frame),
        rows_inserted=inserted,
        rows_updated=len(frame) - inserted,
        seconds=time.perf_counter() - start,
        rows_deleted=replaced.deleted,
        removed=replaced.removed,
        kept=replaced.kept,
    )


def read_frame(url: str, table: sa.Table, **filters: Any) -> pd.DataFrame:
    """Rows of ``table`` whose columns equal ``filters`` (a list means any of), key-ordered."""
    cols = list(table.columns)
    rows: Sequence[Any] = []
    path = sqlite_path(url)
    if path is None or path.exists():
        with open_engine(url) as engine, connect(engine, url) as conn:
            insp = sa.inspect(conn)
            if insp.has_table(table.name, schema=table.schema):
                present = {c["name"] for c in insp.get_columns(table.name, schema=table.schema)}
                cols = [c for c in cols if c.name in present]
                order = [c for c in table.primary_key.columns if c.name in present]
                query = sa.select(*cols).where(*_where(table, filters)).order_by(*order)
                rows = conn.execute(query).all()
    out = pd.DataFrame([tuple(r) for r in rows], columns=[c.name for c in cols])
    for c in cols:
        out[c.name] = from_db(out[c.name], c.type)
    return out


def _where(table: sa.Table, filters: dict[str, Any]) -> list[Any]:
    clauses = []
    for name, value in filters.items():
        if name not in table.c:
            raise ValueError(f"unknown filter column {name!r}; columns: {table.c.keys()}")
        column = table.c[name]
        many = isinstance(value, list | tuple | set)
        vals = [bind(v, column.type) for v in (value if many else [value])]
        clauses.append(column.in_(vals) if many else column == vals[0])
    return clauses


def count_rows(url: str, table: str | sa.Table, schema: str | None = None, **filters: Any) -> int:
    """Rows of ``table`` matching the equality ``filters``; 0 if the table does not exist.

    A string names a table whose columns are read from the database.
    """
    if isinstance(table, str):
        check_identifier(table, "table")
        if schema is not None:
            check_identifier(schema, "schema")
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return 0
    with open_engine(url) as engine, connect(engine, url) as conn:
        name = table if isinstance(table, str) else table.name
        schema = schema if isinstance(table, str) else table.schema
        if not sa.inspect(conn).has_table(name, schema=schema):
            return 0
        if isinstance(table, str):
            table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
        query = sa.select(sa.func.count()).select_from(table).where(*_where(table, filters))
        return int(conn.execute(query).scalar_one())
