"""The ``forecast_runs`` table: one row per forecast write, appended in the write's own
transaction, so the history of who wrote which origin survives reruns.

A forecast row carries the latest writer (its ``flow_run_id``, ``forecast_run_id`` and
``created_at`` are those of the run whose values it holds); this table keeps every run:
origin, model and version, Prefect flow run, rows added / replaced / removed, the series it
wrote and those of the origin it left in place or removed, env, as-of date, data
fingerprint, start and finish times.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from salesflow.storage.sqlstore import WriteResult, check_identifier, read_frame

DEFAULT_RUNS_TABLE = "forecast_runs"
LISTED_SERIES = 20  # series named in removed_series / kept_series (all are counted)


@dataclass(frozen=True)
class RunContext:
    """What the caller knows about the run that writes forecasts (all optional)."""

    flow_run_id: str | None = None
    env: str | None = None
    as_of: dt.date | None = None
    data_fingerprint: str | None = None
    started_at: dt.datetime | None = None  # None: when the write began
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    stage_id: str | None = None  # a staged write's stage (commit_stage sets it)


def forecast_runs_table(name: str = DEFAULT_RUNS_TABLE, schema: str | None = None) -> sa.Table:
    """One row per forecast write (key: ``run_id``)."""
    check_identifier(name, "table")
    if schema is not None:
        check_identifier(schema, "schema")
    text, num = sa.Text, sa.Integer

    def col(n: str, t: Any, null: bool = False) -> sa.Column:
        return sa.Column(n, t, nullable=null)

    return sa.Table(
        name,
        sa.MetaData(),
        col("run_id", text),
        col("forecast_table", text),
        col("model_name", text),
        col("model_version", text),
        col("mlflow_run_id", text, True),
        col("forecast_origin", sa.Date),
        col("n_origins", num),
        col("flow_run_id", text, True),
        col("env", text, True),
        col("as_of", sa.Date, True),
        col("data_fingerprint", text, True),
        col("replace_origin", sa.Boolean),
        *(col(n, num) for n in ("series_written", "rows_written", "rows_added")),
        *(col(n, num) for n in ("rows_replaced", "rows_removed", "series_removed")),
        col("series_kept", num),
        col("removed_series", text, True),
        col("kept_series", text, True),
        col("started_at", sa.DateTime(timezone=True)),
        col("finished_at", sa.DateTime(timezone=True)),
        col("stage_id", text, True),
        sa.PrimaryKeyConstraint("run_id"),
        sa.Index(f"ix_{name}_origin"[:63], "forecast_origin", "model_name"),
        schema=schema,
    )


def run_record(
    frame: pd.DataFrame,
    result: WriteResult,
    ctx: RunContext,
    forecast_table: str,
    replace_origin: bool,
) -> dict[str, Any]:
    """The forecast_runs row of a write of ``frame`` (forecast rows) that did ``result``."""
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=result.seconds)

    def joined(col: str) -> str | None:
        vals = sorted({str(v) for v in frame[col].dropna()}) if col in frame else []
        return ",".join(vals) or None

    origins = pd.to_datetime(frame["forecast_origin"])
    flow_run = ctx.flow_run_id or joined("flow_run_id")
    return {
        "run_id": ctx.run_id,
        "forecast_table": forecast_table,
        "model_name": joined("model_name"),
        "model_version": joined("model_version"),
        "mlflow_run_id": joined("mlflow_run_id"),
        "forecast_origin": origins.min().date(),
        "n_origins": int(origins.nunique()),
        "flow_run_id": flow_run,
        "env": ctx.env,
        "as_of": ctx.as_of,
        "data_fingerprint": ctx.data_fingerprint,
        "replace_origin": bool(replace_origin),
        "series_written": int(frame["unique_id"].nunique()),
        "rows_written": result.rows_written,
        "rows_added": result.rows_inserted,
        "rows_replaced": result.rows_updated,
        "rows_removed": result.rows_deleted,
        "series_removed": len(result.removed),
        "series_kept": len(result.kept),
        "removed_series": _listed(result.removed),
        "kept_series": _listed(result.kept),
        "started_at": ctx.started_at or started,
        "finished_at": dt.datetime.now(dt.UTC),
        "stage_id": ctx.stage_id,
    }


def append_run(conn: Connection, table: sa.Table, record: dict[str, Any]) -> None:
    """Insert ``record`` inside the caller's transaction (the forecast write's)."""
    conn.execute(table.insert(), [record])


def committed_stage(conn: Connection, table: sa.Table, stage_id: str) -> WriteResult | None:
    """What the latest commit of ``stage_id`` wrote, from its runs row (None: never
    committed). The series removed / kept are counted there, not listed: the result's
    ``removed`` / ``kept`` stay empty."""
    c = table.c
    q = sa.select(table).where(c.stage_id == stage_id).order_by(c.finished_at.desc()).limit(1)
    row = conn.execute(q).mappings().first()
    if row is None:
        return None
    return WriteResult(
        rows_written=int(row["rows_written"]),
        rows_inserted=int(row["rows_added"]),
        rows_updated=int(row["rows_replaced"]),
        seconds=0.0,
        table=str(row["forecast_table"]),
        url_redacted="",
        rows_deleted=int(row["rows_removed"]),
        committed_by=str(row["run_id"]),
    )


def _listed(series: dict[str, int]) -> str | None:
    return json.dumps(sorted(series)[:LISTED_SERIES]) if series else None


def read_forecast_runs(
    url: str, table: str = DEFAULT_RUNS_TABLE, schema: str | None = None, **filters: Any
) -> pd.DataFrame:
    """Rows of the runs table (optionally filtered, e.g. ``model_name=``), oldest first.

    ``removed_series`` / ``kept_series`` hold JSON lists of at most 20 series ids.
    """
    runs = read_frame(url, forecast_runs_table(table, schema), **filters)
    return runs.sort_values("started_at", kind="stable").reset_index(drop=True)
