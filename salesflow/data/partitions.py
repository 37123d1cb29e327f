"""The data source cut into partitions that workers read on their own (Dask ingestion).

:func:`list_partitions` names the partitions of ``data`` (cheap: no rows are read) and
:func:`load_partition` reads one of them, anywhere (a Dask worker), with the same settings:

- ``synthetic``: ``data.synthetic.parts`` sub-panels of whole stores, each generated alone
  from its own child seed (:func:`salesflow.data.synthetic.generate_part`);
- ``long`` with a glob as ``data.path``: one partition per matching file, each mapped with
  the same ``data.long`` (static, future and covariates side files are read with every
  file); a single file is one partition;
- ``sql`` with ``data.sql_parts: k`` > 1: k partitions, each the rows whose first key column
  (e.g. ``store``) holds one run of its sorted distinct values (one ``SELECT DISTINCT`` in
  the flow's process to plan them; each worker then reads ``WHERE store IN (...)``);
- ``walmart``, and ``sql`` with ``sql_parts: 1``: one partition (the folder, or the table /
  query), read by one worker.

A partition is read **before** the ``data.as_of`` cut: a long-format file's future rows
start after that file's last date, not the panel's, so the cut is made per shard once a
series' rows from every partition are together (:mod:`salesflow.compute.shuffle`).
No Prefect, no Dask here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from salesflow.config.settings import DataSection
from salesflow.data.canonical import SourceError
from salesflow.data.long_format import history_paths, is_glob, load_long
from salesflow.data.schema import SalesData
from salesflow.data.sources import load_sql, load_walmart, source_path, sql_key_values, sql_url
from salesflow.data.synthetic import generate_part


@dataclass(frozen=True)
class Partition:
    """One partition of the source: its name (task runs show it), its position and count,
    and the file it reads (long format)."""

    name: str
    index: int
    count: int
    path: str | None = None
    key_values: tuple[Any, ...] | None = None  # sql: the first key's values it holds


def list_partitions(data: DataSection) -> list[Partition]:
    """The partitions of ``data``'s source, in a fixed order (see the module docstring)."""
    if data.source == "synthetic":
        k = data.synthetic.parts
        return [Partition(f"synthetic-{i + 1}-of-{k}", i, k) for i in range(k)]
    if data.source == "long" and is_glob(data.path):
        paths = history_paths(source_path(data), data.long)
        n = len(paths)
        return [Partition(_file_name(p, i), i, n, str(p)) for i, p in enumerate(paths)]
    if data.source == "sql" and data.sql_parts > 1:
        return _sql_partitions(data)
    return [Partition(data.source, 0, 1, data.path)]


def _sql_partitions(data: DataSection) -> list[Partition]:
    """``data.sql_parts`` partitions of the sql source, each a run of the sorted distinct
    values of the first key column (whole stores: a series never spans two); fewer when
    there are fewer values."""
    column = data.long.key_columns[0]
    values = sql_key_values(sql_url(data), data.table, data.query, column)
    if not values:
        raise SourceError(f"the sql source returned no rows ({data.table or 'data.query'})")
    groups = [g for g in np.array_split(np.arange(len(values)), data.sql_parts) if len(g)]
    n = len(groups)
    return [
        Partition(
            f"sql-{i + 1}-of-{n}-{column}-{values[g[0]]}-to-{values[g[-1]]}",
            i,
            n,
            key_values=tuple(values[j] for j in g),
        )
        for i, g in enumerate(groups)
    ]


def _file_name(path: Path, index: int) -> str:
    return f"{index + 1:03d}-{path.name}"


def load_partition(data: DataSection, part: Partition) -> SalesData:
    """The rows of ``part`` in the canonical :class:`SalesData`, NOT cut at ``data.as_of``
    (the shards are: :func:`salesflow.compute.shuffle.assemble_shard`). Columns: those of
    the source (:mod:`salesflow.data.sources`)."""
    if data.source == "synthetic":
        return generate_part(data.synthetic, part.index)
    if data.source == "long":
        return load_long(part.path or source_path(data), data.long, data.freq)
    if data.source == "walmart":
        return load_walmart(source_path(data))
    if data.source == "sql":
        return load_sql(
            sql_url(data), data.table, data.query, data.long, data.freq, part.key_values
        )
    raise SourceError(f"unknown data.source {data.source!r}: use synthetic, walmart, long or sql")
