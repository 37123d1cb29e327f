"""Replacing the partitions a write touches (e.g. one model's forecasts of one origin).

After an upsert has stamped every row it wrote (a column holding one value per write, e.g.
``created_at``), the rows of the same partitions that it did not stamp are older rows. Two
kinds of them:

* rows of a *member* (e.g. a series) that the write holds: stale rows of a replaced member
  (e.g. target dates a shorter horizon no longer produces) — always deleted;
* rows of members the write does not hold (e.g. the other stores' series, absent from a
  partial extract) — kept unless the whole partition is replaced, and counted either way
  so that the caller can say what it left or removed.

Without a member column every unstamped row of the partition is deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from salesflow.storage.sqlconvert import Values


@dataclass(frozen=True)
class Replaced:
    """Rows deleted, and the absent members' row counts (removed, or kept in place)."""

    deleted: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)


def replace_partitions(
    conn: Connection,
    table: sa.Table,
    names: list[str],
    values: Values,
    replace_by: Sequence[str],
    stamp: str,
    member: str | None = None,
    keep_absent: bool = False,
) -> Replaced:
    """Delete the unstamped rows of the partitions present in ``values`` (see module doc).

    ``names``/``values``: the written columns and their driver values; ``replace_by``: the
    partition columns; ``stamp``: a column with one value for the whole write.
    """
    stamps = set(values[names.index(stamp)])
    if len(stamps) != 1:
        raise ValueError(f"column {stamp!r} must hold one value for the whole write")
    cols = [values[names.index(c)] for c in replace_by]
    q = conn.dialect.identifier_preparer
    target = q.format_table(table)
    part = " AND ".join(f"{q.quote(c)} = :p{i}" for i, c in enumerate(replace_by))
    old, new = f"{part} AND {q.quote(stamp)} <> :s", f"{part} AND {q.quote(stamp)} = :s"
    deleted, removed, kept = 0, dict[str, int](), dict[str, int]()
    for key in sorted(set(zip(*cols, strict=True)), key=str):
        params = {f"p{i}": v for i, v in enumerate(key)} | {"s": next(iter(stamps))}
        if member is None:
            deleted += _delete(conn, f"DELETE FROM {target} WHERE {old}", params)
            continue
        m = q.quote(member)
        written = f"SELECT {m} FROM {target} WHERE {new}"
        absent = _counts(
            conn, f"SELECT {m}, count(*) FROM {target} WHERE {old} AND {m} NOT IN ({written}) "
            f"GROUP BY {m}", params,
        )  # fmt: skip
        if keep_absent:
            sql = f"DELETE FROM {target} WHERE {old} AND {m} IN ({written})"
            _add(kept, absent)
        else:
            sql = f"DELETE FROM {target} WHERE {old}"
            _add(removed, absent)
        deleted += _delete(conn, sql, params)
    return Replaced(deleted, removed, kept)


def _delete(conn: Connection, sql: str, params: dict[str, Any]) -> int:
    return int(conn.execute(sa.text(sql), params).rowcount)


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for k, n in counts.items():
        into[k] = into.get(k, 0) + n


def _counts(conn: Connection, sql: str, params: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(n) for k, n in conn.execute(sa.text(sql), params).all()}
