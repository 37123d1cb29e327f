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

Engines, connections and URL redaction are in :mod:`salesflow.sqlengine` (re-exported).
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
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.schema import CreateColumn

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


class WarehouseSchemaError(RuntimeError):
    """An existing table cannot be migrated automatically (NOT NULL column or key missing)."""


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


def _after_chunk(i: int) -> None:
    """Called after chunk ``i`` is loaded; tests monkeypatch it to inject a fault mid-write."""


# PostgreSQL writes that replace partitions of a member/key layout (write_forecasts) take
# :mod:`salesflow.storage.pgreplace`'s delete + COPY path; False forces the older
# COPY-to-stage + upsert path (kept for generic tables; benchmarks and tests compare them).
FAST_REPLACE = True
_CHECKED_BY_DB = ("23502", "23505")  # not_null_violation, unique_violation


# --- table creation and migration ---------------------------------------------------------


def ensure_table(
    engine: Engine, table: sa.Table, key_columns: Sequence[str] | None = None
) -> sa.Table:
    """Create ``table`` if missing, else add its missing nullable columns; return the Table.

    Raises :class:`WarehouseSchemaError` when an existing table lacks a NOT NULL column or
    has no primary key / unique constraint on ``key_columns`` (default: its primary key).
    """
    key = list(key_columns or table.primary_key.columns.keys())
    dialect = engine.dialect.name
    if dialect == "sqlite" and table.schema not in (None, "main"):
        raise ValueError(f"schema {table.schema!r} is not supported on SQLite; use schema=None")
    if dialect == "postgresql" and _ready_postgres(engine, table, key):
        return table
    with engine.begin() as conn:
        if dialect == "postgresql":
            # Serialise concurrent first writers: CREATE TABLE IF NOT EXISTS races on pg_type.
            conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"salesflow:{qualified(table)}",)
            )
            if table.schema:
                quoted = conn.dialect.identifier_preparer.quote_schema(table.schema)
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        insp = sa.inspect(conn)
        if not insp.has_table(table.name, schema=table.schema):
            table.create(conn)
            log.info("created table %s", qualified(table))
        else:
            _migrate(conn, insp, table, key)
    return table


_READY_SQL = """
WITH t AS (SELECT to_regclass(quote_ident(coalesce(%(schema)s, current_schema())) || '.'
                              || quote_ident(%(name)s)) AS oid)
SELECT (SELECT array_agg(a.attname::text) FROM pg_attribute a, t
        WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT array_agg(array_to_string(array(
            SELECT a.attname FROM unnest(i.indkey) AS k(n)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
            ORDER BY a.attname), ','))
        FROM pg_index i, t WHERE i.indrelid = t.oid AND i.indisunique)
"""


def _ready_postgres(engine: Engine, table: sa.Table, key: list[str]) -> bool:
    """Whether ``table`` exists with every column and (unless ``key`` is empty) a unique key
    on ``key``: two catalog lookups in one query (reflecting it takes ~50 ms)."""
    with engine.connect() as conn:
        row = conn.exec_driver_sql(_READY_SQL, {"schema": table.schema, "name": table.name})
        columns, uniques = row.one()
    if not columns or not set(table.c.keys()) <= set(columns):
        return False
    return not key or ",".join(sorted(key)) in (uniques or [])


def _migrate(conn: Connection, insp: sa.Inspector, table: sa.Table, key: list[str]) -> None:
    name, schema = table.name, table.schema
    existing = {c["name"] for c in insp.get_columns(name, schema=schema)}
    missing = [c for c in table.columns if c.name not in existing]
    if not_null := [c.name for c in missing if not c.nullable]:
        raise WarehouseSchemaError(
            f"table {qualified(table)} lacks NOT NULL column(s) {not_null}; only nullable "
            "columns are added automatically: migrate it by hand or write to a new table"
        )
    target = conn.dialect.identifier_preparer.format_table(table)
    for c in missing:
        ddl = CreateColumn(c).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {target} ADD COLUMN {ddl}")
        log.info("added column %s to table %s", c.name, qualified(table))
    unique: list[list[Any]] = [insp.get_pk_constraint(name, schema=schema)["constrained_columns"]]
    unique += [u["column_names"] for u in insp.get_unique_constraints(name, schema=schema)]
    unique += [i["column_names"] for i in insp.get_indexes(name, schema=schema) if i["unique"]]
    if sorted(key) not in [sorted(u) for u in unique]:
        raise WarehouseSchemaError(
            f"table {qualified(table)} has no primary key or unique constraint on {key}, "
            "which the upsert needs: add one or write to a new table"
        )


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
