"""PostgreSQL's fast replace: delete a partition's rows being replaced, then COPY the new
rows straight into the target (no staging table, no ``ON CONFLICT``), in the caller's
transaction.

A partition is one value of the ``replace_by`` columns (for forecasts: one model and one
origin); a *member* is a series. Per partition, in this order:

1. ``pg_advisory_xact_lock`` on (table, partition), taken in a sorted order: concurrent
   writers of the same partition queue up (each statement of the next one sees the rows
   the previous one committed), so a COPY never meets a key that another writer inserted.
2. One ``DELETE ... RETURNING`` removes the rows being replaced: every row of the
   partition (``keep_absent=False``) or only those of the members the write holds
   (``keep_absent=True``). Its returned keys are joined, on the server, with the write's
   keys and aggregated there, so the counts are exact and only one small row per absent
   member comes back: a deleted row whose key the write holds is *updated*, any other
   deleted row is *deleted*; deleted rows of members the write lacks are *removed*.
3. With ``keep_absent``, the rows left in the partition are exactly the absent members'
   rows (*kept*), counted by one ``GROUP BY``.

The write's keys reach the server compactly: members are grouped into classes that share
the same set of "rest" key values (for forecasts: target dates; in a batch every series
usually has the same horizon, so one class), and the server gets the member -> class and
class -> values arrays. The rows are then COPYed in binary into the target, in key order
(:func:`key_order`), as one COPY fed chunk by chunk (:func:`copy_chunks`). Every step runs
in the caller's transaction, so an error anywhere rolls all of it back.

Why not 50 % of a raw COPY: a COPY into a table with the forecasts key and index costs
PostgreSQL two B-tree inserts per row and about twice the WAL of a COPY into a plain
table; this path runs at that floor (see ``benchmarks/bench_warehouse.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from salesflow.storage.sqlconvert import Values, db_values, qualified
from salesflow.storage.sqlreplace import Replaced


@dataclass(frozen=True)
class Keys:
    """How a table's key splits: partition columns, the member column and one rest column."""

    partition: tuple[str, ...]
    member: str
    rest: str


def split_key(key: Sequence[str], replace_by: Sequence[str], member: str | None) -> Keys | None:
    """The fast path's key layout, or None when ``key`` is not partition + member + one."""
    if member is None or member in replace_by or not set(replace_by) <= set(key):
        return None
    rest = [k for k in key if k not in replace_by and k != member]
    if member not in key or len(rest) != 1:
        return None
    return Keys(tuple(replace_by), member, rest[0])


def cursor(conn: Connection) -> Any:
    """The driver's own cursor on ``conn``, inside its transaction (for COPY)."""
    driver = conn.connection.driver_connection
    assert driver is not None, "connection is closed"
    return driver.cursor()


def lock_partitions(
    conn: Connection, table: sa.Table, partitions: Sequence[tuple[Any, ...]]
) -> None:
    """Take the transaction-level advisory lock of each partition, in a stable order."""
    cur = cursor(conn)
    for part in sorted(partitions, key=str):
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (partition_lock_name(table, part),),
        )


def partition_lock_name(table: sa.Table, part: tuple[Any, ...]) -> str:
    """The advisory lock's name for one partition of ``table``."""
    return f"salesflow:{qualified(table)}:" + json.dumps([str(v) for v in part])


@dataclass(frozen=True)
class Coded:
    """One key column of a write: a code per row and the driver-ready value of each code."""

    codes: np.ndarray
    uniques: list[Any]


def replace_by_copy(
    conn: Connection,
    table: sa.Table,
    names: list[str],
    chunks: Iterable[Values],
    coded: dict[str, Coded],
    keys: Keys,
    keep_absent: bool,
    after_chunk: Callable[[int], None],
) -> tuple[int, Replaced]:
    """Replace the partitions of the write and COPY its rows; (rows updated, replaced).

    ``coded``: the write's partition, member and rest columns; ``chunks``: its rows, as
    driver values of the columns ``names``, produced while earlier chunks are sent.
    """
    part_codes, parts = _partitions([coded[c] for c in keys.partition])
    lock_partitions(conn, table, parts)
    m_type, r_type = _type(conn, table, keys.member), _type(conn, table, keys.rest)
    updated, total = 0, Replaced()
    for i, part in enumerate(parts):
        mine = slice(None) if len(parts) == 1 else part_codes == i
        ctes, params = _frame_keys(coded[keys.member], coded[keys.rest], mine, m_type, r_type)
        n, done = delete_counted(conn, table, keys, part, keep_absent, ctes, params)
        updated, total = updated + n, merge(total, done)
    copy_chunks(conn, table, names, chunks, after_chunk)
    return updated, total


def coded_keys(
    frame: pd.DataFrame, table: sa.Table, keys: Keys, stamp: str, dialect: str
) -> dict[str, Coded] | None:
    """The write's partition, member and rest columns coded; None if one holds a null.

    Raises ``ValueError`` unless the ``stamp`` column holds one value for the whole write.
    Only distinct values are converted, so this costs a factorize per column.
    """
    coded = {}
    for col in (*keys.partition, keys.member, keys.rest, stamp):
        codes, uniques = pd.factorize(frame[col])
        if (codes < 0).any():
            return None
        driver = db_values(pd.Series(uniques), table.c[col], dialect)
        # Distinct values may convert to one (two timestamps of a day, as a date): merge them.
        merged, final = pd.factorize(np.asarray(driver, dtype=object))
        coded[col] = Coded(merged[codes], final.tolist())
    if len(coded[stamp].uniques) > 1:
        raise ValueError(f"column {stamp!r} must hold one value for the whole write")
    return coded


def key_order(coded: dict[str, Coded], key: Sequence[str]) -> np.ndarray | None:
    """The row order that sorts the write by ``key`` (every key column is in ``coded``), or
    None when it is sorted already. Rows COPYed in key order insert into the key's index
    page after page: ~20 % less server CPU and ~10 % less WAL than in a scattered order.
    """
    ranks = []
    for col in reversed(key):  # np.lexsort sorts by its last array first
        c = coded[col]
        by_value = np.argsort(np.asarray(c.uniques, dtype=object), kind="stable")
        rank = np.empty(len(by_value), dtype=np.int64)
        rank[by_value] = np.arange(len(by_value))
        ranks.append(rank[c.codes])
    order = np.lexsort(ranks)
    return None if bool((np.diff(order) > 0).all()) else order


def prepared_chunks(
    frame: pd.DataFrame,
    table: sa.Table,
    names: list[str],
    dialect: str,
    chunk_rows: int,
    first: Values,
) -> Iterator[Values]:
    """``first`` (the first chunk, prepared and checked by ``prepare_frame``), then each
    next chunk of ``frame`` converted to driver values. Those are not checked here: the
    table's NOT NULL and key constraints refuse a null or a repeated key, and the caller
    names the bad row then (see :func:`salesflow.storage.sqlstore.write_frame`)."""
    yield first
    for a, b in _chunks(len(frame), chunk_rows):
        if a:
            part = frame.iloc[a:b]
            yield [db_values(part[n], table.c[n], dialect) for n in names]


def _partitions(cols: list[Coded]) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """Each row's partition number, and the partitions' values."""
    codes = np.zeros(len(cols[0].codes), dtype=np.int64)
    for col in cols:
        codes = codes * len(col.uniques) + col.codes
    found, inverse = np.unique(codes, return_inverse=True)
    parts = []
    for code in found.tolist():
        part = []
        for col in reversed(cols):
            code, k = divmod(code, len(col.uniques))
            part.append(_plain(col.uniques[k]))
        parts.append(tuple(reversed(part)))
    return inverse, parts


def _frame_keys(
    member: Coded, rest: Coded, rows: Any, m_type: str, r_type: str
) -> tuple[str, list[Any]]:
    """CTEs ``fm``/``fk`` holding the keys of one partition's ``rows``, and their parameters.

    Members are grouped into classes sharing one set of rest values (a bit matrix of member
    x rest value, its rows factorized), so a batch whose series share their target dates
    sends one array of series and one short array of dates. When the matrix would be too
    large (many distinct rest values), every key is sent instead.
    """
    m_codes, m_idx = pd.factorize(member.codes[rows])
    r_codes, r_idx = pd.factorize(rest.codes[rows])
    m_uniques = _plain([member.uniques[i] for i in m_idx.tolist()])
    r_uniques = np.asarray(_plain([rest.uniques[i] for i in r_idx.tolist()]), dtype=object)
    width = (len(r_uniques) + 7) // 8
    if width > 8 or len(m_uniques) * len(r_uniques) > _MAX_MATRIX:
        ctes = (
            f"fk AS (SELECT * FROM unnest(%s::{m_type}[], %s::{r_type}[]) AS fk(member, rest)),"
            " fm AS (SELECT DISTINCT member FROM fk)"
        )
        members = np.asarray(m_uniques, dtype=object)[m_codes]
        return ctes, [members.tolist(), r_uniques[r_codes].tolist()]
    matrix = np.zeros((len(m_uniques), len(r_uniques)), dtype=bool)
    matrix[m_codes, r_codes] = True
    packed = np.zeros((len(m_uniques), 8), dtype=np.uint8)
    packed[:, :width] = np.packbits(matrix, axis=1)
    cls, _ = pd.factorize(packed.view(np.uint64).ravel())
    first = np.unique(cls, return_index=True)[1]
    rest_cls, rest_idx = np.nonzero(matrix[first])
    ctes = (
        f"fm AS (SELECT * FROM unnest(%s::{m_type}[], %s::int[]) AS fm(member, cls)), "
        f"fd AS (SELECT * FROM unnest(%s::int[], %s::{r_type}[]) AS fd(cls, rest)), "
        "fk AS (SELECT fm.member, fd.rest FROM fm JOIN fd USING (cls))"
    )
    return ctes, [m_uniques, cls.tolist(), rest_cls.tolist(), r_uniques[rest_idx].tolist()]


_MAX_MATRIX = 50_000_000  # member x rest-value cells of the class matrix (bytes of memory)


def delete_counted(
    conn: Connection,
    table: sa.Table,
    keys: Keys,
    part: tuple[Any, ...],
    keep_absent: bool,
    ctes: str,
    params: list[Any],
) -> tuple[int, Replaced]:
    """Delete the rows of partition ``part`` being replaced; (updated, Replaced).

    ``ctes`` defines ``fm(member)`` (the write's members, each once) and ``fk(member, rest)``
    (the write's keys in this partition, each once), with ``params`` for its placeholders;
    both are joined with the deleted rows by hash joins on the server.
    """
    q = conn.dialect.identifier_preparer
    target, m, r = q.format_table(table), q.quote(keys.member), q.quote(keys.rest)
    where = " AND ".join(f"t.{q.quote(c)} = %s" for c in keys.partition)
    only = f" AND t.{m} IN (SELECT member FROM fm)" if keep_absent else ""
    sql = (
        f"WITH {ctes}, d AS (DELETE FROM {target} AS t WHERE {where}{only} "
        f"RETURNING t.{m} AS member, t.{r} AS rest) "
        "SELECT CASE WHEN fm.member IS NULL THEN d.member END AS absent, count(*), "
        "count(fk.member) FROM d LEFT JOIN fm ON fm.member = d.member "
        "LEFT JOIN fk ON fk.member = d.member AND fk.rest = d.rest GROUP BY 1"
    )
    cur = cursor(conn)
    # Fresh rows have no statistics yet (a new table, a just-filled stage): the planner then
    # guesses one row and may pick nested loops over tens of thousands (minutes). Hash
    # joins are right for any size here.
    cur.execute("SELECT current_setting('enable_nestloop')")
    nestloop = cur.fetchone()[0]
    cur.execute("SELECT set_config('enable_nestloop', 'off', true)")
    cur.execute(sql, (*params, *part))
    rows = cur.fetchall()
    cur.execute("SELECT set_config('enable_nestloop', %s, true)", (nestloop,))
    deleted, updated, removed = 0, 0, {}
    for absent, n, n_updated in rows:
        deleted, updated = deleted + n, updated + n_updated
        if absent is not None:
            removed[str(absent)] = int(n)
    kept: dict[str, int] = {}
    if keep_absent:
        cur.execute(f"SELECT t.{m}, count(*) FROM {target} AS t WHERE {where} GROUP BY t.{m}", part)
        kept = {str(k): int(n) for k, n in cur.fetchall()}
    return int(updated), Replaced(int(deleted - updated), removed, kept)


def copy_rows(
    conn: Connection,
    table: sa.Table,
    names: list[str],
    values: Values,
    chunk_rows: int,
    after_chunk: Callable[[int], None],
    into: str | None = None,
) -> None:
    """Binary COPY of the rows into ``table`` (or the table named ``into``), by chunks."""
    chunks = ([v[a:b] for v in values] for a, b in _chunks(len(values[0]), chunk_rows))
    copy_chunks(conn, table, names, chunks, after_chunk, into)


def copy_chunks(
    conn: Connection,
    table: sa.Table,
    names: list[str],
    chunks: Iterable[Values],
    after_chunk: Callable[[int], None],
    into: str | None = None,
) -> None:
    """One binary COPY of the rows of every chunk into ``table`` (or the table ``into``).

    A worker thread sends the data (psycopg's ``QueuedLibpqWriter``), so the next chunk
    is produced (converted) while the server still ingests the previous one.
    """
    from psycopg.copy import QueuedLibpqWriter  # PostgreSQL only: not imported for SQLite

    q = conn.dialect.identifier_preparer
    target = into or q.format_table(table)
    cols = ", ".join(q.quote(n) for n in names)
    cur = cursor(conn)
    cur.execute(f"SELECT {cols} FROM {target} LIMIT 0")
    oids = [d.type_code for d in cur.description]
    sql = f"COPY {target} ({cols}) FROM STDIN (FORMAT BINARY)"
    with cur.copy(sql, writer=QueuedLibpqWriter(cur)) as copy:
        copy.set_types(oids)
        for i, values in enumerate(chunks):
            for row in zip(*values, strict=True):
                copy.write_row(row)
            after_chunk(i)


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _plain(vals: Any) -> Any:
    # pd.factorize may hand back numpy scalars; the driver wants Python values.
    if isinstance(vals, list):
        return [v.item() if isinstance(v, np.generic) else v for v in vals]
    return vals.item() if isinstance(vals, np.generic) else vals


def _type(conn: Connection, table: sa.Table, column: str) -> str:
    return str(table.c[column].type.compile(dialect=conn.dialect))


def merge(a: Replaced, b: Replaced) -> Replaced:
    """The rows deleted, removed and kept by two replaces together."""
    removed, kept = dict(a.removed), dict(a.kept)
    for into, add in ((removed, b.removed), (kept, b.kept)):
        for k, n in add.items():
            into[k] = into.get(k, 0) + n
    return Replaced(a.deleted + b.deleted, removed, kept)
