"""The forecasts table: one row per (model, series, origin, target date), upserted in one
transaction (see :mod:`salesflow.sqlstore` for the machinery, re-exported here)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from salesflow.errors import UserError
from salesflow.storage.forecast_runs import (
    DEFAULT_RUNS_TABLE,
    RunContext,
    append_run,
    forecast_runs_table,
    read_forecast_runs,
    run_record,
)
from salesflow.storage.sqlconvert import qualified
from salesflow.storage.sqlstore import (
    WarehouseSchemaError,
    WarehouseUnavailable,
    WriteResult,
    check_connection,
    check_identifier,
    read_frame,
    redact_url,
    write_frame,
)
from salesflow.storage.sqlstore import count_rows as _count_rows
from salesflow.storage.sqlstore import ensure_table as _ensure_table

__all__ = [
    "DEFAULT_RUNS_TABLE",
    "DEFAULT_TABLE",
    "FORECAST_KEY",
    "RunContext",
    "SeriesIdTooLong",
    "WarehouseSchemaError",
    "WarehouseUnavailable",
    "WriteResult",
    "check_connection",
    "count_rows",
    "describe_write",
    "ensure_table",
    "forecast_runs_table",
    "forecasts_table",
    "read_forecast_runs",
    "read_forecasts",
    "read_frame",
    "redact_url",
    "write_forecasts",
    "write_frame",
]

DEFAULT_TABLE = "sales_forecasts"
FORECAST_KEY = ("model_name", "unique_id", "forecast_origin", "target_date")


def forecasts_table(name: str = DEFAULT_TABLE, schema: str | None = None) -> sa.Table:
    """The forecasts table: one row per (model, series, origin, target date)."""
    check_identifier(name, "table")
    if schema is not None:
        check_identifier(schema, "schema")
    text, real = sa.Text, sa.Double

    def col(n: str, t: Any, null: bool = False) -> sa.Column:
        return sa.Column(n, t, nullable=null)

    return sa.Table(
        name,
        sa.MetaData(),
        col("unique_id", text),
        col("series_keys", text),
        col("store", text, True),
        col("dept", text, True),
        col("forecast_origin", sa.Date),
        col("target_date", sa.Date),
        col("horizon", sa.Integer),
        col("forecast", real),
        *(col(n, real, True) for n in ("lo_80", "hi_80", "lo_95", "hi_95")),
        col("model_name", text),
        col("model_version", text),
        col("mlflow_run_id", text),
        col("flow_run_id", text, True),
        col("forecast_run_id", text, True),  # the forecast_runs row of the latest writer
        col("created_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint(*FORECAST_KEY),
        sa.Index(f"ix_{name}_origin"[:63], "forecast_origin", "model_name"),
        schema=schema,
    )


# --- forecasts ----------------------------------------------------------------------------


def write_forecasts(
    url: str,
    frame: pd.DataFrame,
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
    chunk_rows: int = 50_000,
    *,
    replace_origin: bool = False,
    runs_table: str | None = DEFAULT_RUNS_TABLE,
    context: RunContext | None = None,
) -> WriteResult:
    """Upsert forecasts on (model_name, unique_id, forecast_origin, target_date).

    ``frame`` columns: ``unique_id``, ``series_keys`` (JSON text or dict of the key columns),
    ``forecast_origin``, ``target_date`` (dates), ``horizon`` (int), ``forecast`` (float),
    ``model_name``, ``model_version``, ``mlflow_run_id``; optional ``lo_80``, ``hi_80``,
    ``lo_95``, ``hi_95``, ``flow_run_id``, ``store``, ``dept`` (taken from ``series_keys``
    when absent). ``created_at`` and ``forecast_run_id`` are set here.

    Re-writing an origin replaces the rows of the series in ``frame`` (their rows it no
    longer produces are deleted). Series of that origin and model that ``frame`` lacks (a
    partial extract) are left as they were and listed in ``WriteResult.kept``, unless
    ``replace_origin``: then they are deleted and listed in ``WriteResult.removed``. In the
    same transaction a row is appended to ``runs_table`` (:mod:`salesflow.forecast_runs`;
    None: no record). Raises :class:`SeriesIdTooLong` (a UserError) when PostgreSQL's key
    index cannot hold a series id.

    On PostgreSQL the write locks the (model, origin), deletes the rows it replaces and
    COPYs the frame into the table (:mod:`salesflow.storage.pgreplace`): a replaced row
    is replaced whole, so an optional column the frame lacks becomes NULL there (SQLite's
    upsert keeps the old value). Sharded writers use :mod:`salesflow.storage.staging`.
    """
    ctx = context or RunContext()
    target = forecasts_table(table, schema)
    runs = None if runs_table is None else forecast_runs_table(runs_table, schema)
    rows = _with_defaults(frame, forecast_run_id=ctx.run_id)

    def record(conn: Connection, result: WriteResult) -> None:
        if runs is not None:
            append_run(conn, runs, _run_row(rows, result, ctx, qualified(target), replace_origin))

    try:
        return write_frame(
            url, rows, target, FORECAST_KEY, chunk_rows,
            replace_by=("model_name", "forecast_origin"), stamp="created_at",
            member="unique_id", keep_absent=not replace_origin,
            also=[runs] if runs is not None else [], then=record,
        )  # fmt: skip
    except Exception as exc:  # psycopg's own error (COPY path) or SQLAlchemy's wrapper
        if getattr(getattr(exc, "orig", exc), "sqlstate", None) == "54000":  # too long a key
            raise _too_long(rows, target) from None
        raise


class SeriesIdTooLong(UserError):
    """A series id (with the model name) is too long for PostgreSQL's primary-key index."""


def _too_long(rows: pd.DataFrame, target: sa.Table) -> SeriesIdTooLong:
    ids = rows["unique_id"].astype(str)
    return _too_long_id(ids.loc[ids.str.len().idxmax()], target)


def _too_long_id(longest: str, target: sa.Table) -> SeriesIdTooLong:
    """The error for a series id (``longest``, the longest one) too long for the index."""
    return SeriesIdTooLong(
        f"a series id is too long for PostgreSQL's index on {qualified(target)} (a key may "
        f"take about 2,700 bytes; the longest unique_id has {len(longest.encode()):,} bytes, "
        f"starting {longest[:40]!r}): shorten the values of the key columns (data.long.keys) "
        "or map them to shorter codes"
    )


def describe_write(result: WriteResult, listed: int = 5) -> str:
    """One line on what a forecast write did: added, replaced, removed, left in place."""

    def names(series: dict[str, int]) -> str:
        shown = ", ".join(sorted(series)[:listed])
        return shown + (", ..." if len(series) > listed else "")

    line = (
        f"{result.rows_written:,} rows written to {result.table}: {result.rows_inserted:,} "
        f"added, {result.rows_updated:,} replaced, {result.rows_deleted:,} removed"
    )
    if result.committed_by:
        line += f" by an earlier attempt of this commit (forecast run {result.committed_by})"
    if result.removed:
        n = sum(result.removed.values())
        line += f"; {len(result.removed):,} series not in this run removed ({n:,} rows: "
        line += f"{names(result.removed)})"
    if result.kept:
        n = sum(result.kept.values())
        line += f"; {len(result.kept):,} series of this origin not in this run left as they "
        line += f"were ({n:,} rows: {names(result.kept)}; --replace-origin removes them)"
    return line


RUN_COLUMNS = ("model_name", "model_version", "mlflow_run_id", "flow_run_id", "forecast_origin")


def _run_row(
    rows: pd.DataFrame,
    result: WriteResult,
    ctx: RunContext,
    table: str,
    replace_origin: bool,
    n_series: int | None = None,
) -> dict[str, Any]:
    """The runs-table row of a write of ``rows``, from their distinct run-level values;
    ``n_series``: the number of series written (default: counted in ``rows``)."""
    if n_series is None:
        n_series = int(rows["unique_id"].nunique())
    # Each column's distinct values (padded with nulls, which run_record ignores).
    summary = pd.DataFrame({c: pd.Series(pd.unique(rows[c])) for c in RUN_COLUMNS if c in rows})
    summary["unique_id"] = None  # counted above
    record = run_record(summary, result, ctx, table, replace_origin)
    return record | {"series_written": n_series}


def _with_defaults(frame: pd.DataFrame, **constants: Any) -> pd.DataFrame:
    """``frame`` with series_keys as JSON, store/dept from them, created_at now and the
    ``constants`` as columns (a shallow copy: the caller's frame is left alone)."""
    out = frame.copy(deep=False)
    if "series_keys" in out:
        # Each distinct value is converted once (a batch repeats a series' keys per horizon).
        keys = out["series_keys"]
        try:
            codes, uniques = pd.factorize(keys)
        except TypeError:  # dicts are not hashable: their JSON is
            codes, uniques = pd.factorize(keys.map(_json))
        texts = [_json(v) for v in uniques]
        lookup = {s: _parse_keys(s) for s in texts if isinstance(s, str)}
        for col in ("store", "dept"):
            if col not in out:
                per_key = [lookup[s].get(col) if isinstance(s, str) else None for s in texts]
                out[col] = _take(per_key, codes)
        out["series_keys"] = _take(texts, codes)
    out["created_at"] = pd.Timestamp(dt.datetime.now(dt.UTC))
    for col, value in constants.items():
        out[col] = value
    return out


def _json(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict) else value


def _take(per_unique: list[Any], codes: Any) -> Any:
    """Values by factorize codes (-1, a missing value, gives None)."""
    table = np.array([*per_unique, None], dtype=object)
    return table[np.where(codes < 0, len(per_unique), codes)]


def _parse_keys(text: str) -> dict[str, str | None]:
    try:
        keys = json.loads(text)
    except (TypeError, ValueError):
        keys = None
    if not isinstance(keys, dict):
        raise ValueError(f'series_keys must be JSON objects such as {{"store": 1}}, got {text!r}')
    return {k: None if v is None else str(v) for k, v in keys.items()}


def read_forecasts(
    url: str,
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
    model_name: str | None = None,
    forecast_origin: Any = None,
) -> pd.DataFrame:
    """Forecast rows, optionally of one model and/or origin; empty if the table is missing.

    Columns as in :func:`forecasts_table`; ``forecast_origin`` and ``target_date`` are
    datetime64[ns], ``created_at`` datetime64[ns, UTC], on every backend.
    """
    filters = {"model_name": model_name, "forecast_origin": forecast_origin}
    return read_frame(
        url, forecasts_table(table, schema), **{k: v for k, v in filters.items() if v is not None}
    )


def ensure_table(
    engine: Engine,
    table: str | sa.Table = DEFAULT_TABLE,
    schema: str | None = None,
    key_columns: Sequence[str] | None = None,
) -> sa.Table:
    """Create or migrate ``table``; a string names a forecasts table."""
    if isinstance(table, str):
        table = forecasts_table(table, schema)
    return _ensure_table(engine, table, key_columns)


def count_rows(
    url: str, table: str | sa.Table = DEFAULT_TABLE, schema: str | None = None, **filters: Any
) -> int:
    """Rows of ``table`` (default: the forecasts table) matching the equality ``filters``."""
    return _count_rows(url, table, schema, **filters)
