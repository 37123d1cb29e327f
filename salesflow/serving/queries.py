"""Read-only queries behind the API and the dashboard: stored forecasts (keyset pages),
store totals; and, from :mod:`salesflow.serving.queries_registry` (re-exported), model
versions, audit events, realized accuracy and the champion's facts.

Every function takes the settings and reads the configured warehouse / MLflow registry;
a missing SQLite file, table or model gives an empty result, never an error. An
unreachable warehouse raises :class:`salesflow.sqlengine.WarehouseUnavailable` (password
redacted). The forecast reads keep one pooled engine per warehouse URL (the API calls
them on every request), see :func:`engine_for`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from salesflow.config.settings import Settings
from salesflow.errors import UserError, redact
from salesflow.serving.queries_registry import (
    audit_events,
    model_info,
    model_versions,
    realized_accuracy,
)
from salesflow.storage.sqlengine import WarehouseUnavailable, connect, redact_url, sqlite_path
from salesflow.storage.warehouse import forecasts_table

__all__ = [
    "FORECAST_FIELDS",
    "ForecastPage",
    "InvalidCursor",
    "UnknownSeriesKey",
    "audit_events",
    "check_warehouse",
    "dispose_engines",
    "engine_for",
    "forecast_page",
    "latest_origin",
    "model_info",
    "model_versions",
    "realized_accuracy",
    "series_forecast",
    "series_id",
    "store_totals",
]

FORECAST_FIELDS = (
    "unique_id",
    "series_keys",
    "forecast_origin",
    "target_date",
    "horizon",
    "forecast",
    "lo_80",
    "hi_80",
    "lo_95",
    "hi_95",
    "model_name",
    "model_version",
)
_BOUNDS = ("forecast", "lo_80", "hi_80", "lo_95", "hi_95")


class InvalidCursor(UserError, ValueError):
    """The ``after`` cursor was not returned by a previous page."""


class UnknownSeriesKey(UserError, ValueError):
    """A filter names a key the forecasts' series do not have."""


@dataclass(frozen=True)
class ForecastPage:
    """One page of forecast rows (dicts with :data:`FORECAST_FIELDS`, ``series_keys`` a dict
    of strings), the origin they are of, and the cursor of the next page (None: last)."""

    rows: list[dict[str, Any]]
    origin: dt.date | None
    next_cursor: str | None


# --- engines --------------------------------------------------------------------------------

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()
_SQLITE_BUSY_MS = 30_000


def engine_for(url: str) -> Engine:
    """The pooled read engine of ``url`` (created once per URL and process)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = _create_engine(url)
        return engine


def _create_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        engine = sa.create_engine(u, connect_args={"check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _busy(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")

        return engine
    args = {} if "connect_timeout" in u.query else {"connect_timeout": 10}
    return sa.create_engine(u, pool_pre_ping=True, pool_size=8, connect_args=args)


def dispose_engines() -> None:
    """Close every pooled engine (tests, shutdown)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()
        _KEY_NAMES.clear()


@contextmanager
def _reading(url: str) -> Iterator[Connection | None]:
    """A connection of the pooled engine; None when the SQLite file does not exist yet."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        yield None
        return
    with connect(engine_for(url), url) as conn:
        yield conn


def check_warehouse(settings: Settings) -> None:
    """Raise ``WarehouseUnavailable`` unless the warehouse answers (a SQLite file that does
    not exist yet counts as reachable: nothing was written)."""
    with _reading(settings.warehouse_url) as conn:
        if conn is not None:
            conn.exec_driver_sql("SELECT 1")


def _missing_table(conn: Connection, table: sa.Table) -> bool:
    conn.rollback()  # PostgreSQL refuses further statements in a failed transaction
    return not sa.inspect(conn).has_table(table.name, schema=table.schema)


def _run(url: str, table: sa.Table, query: Any) -> list[sa.Row[Any]]:
    """Rows of ``query`` on ``table``; none when the file or the table is missing."""
    with _reading(url) as conn:
        if conn is None:
            return []
        try:
            return list(conn.execute(query).all())
        except (sa.exc.ProgrammingError, sa.exc.OperationalError) as exc:
            try:
                missing = _missing_table(conn, table)
            except sa.exc.DBAPIError:  # the connection broke: the database went away
                raise _lost(url, exc) from None
            if missing:
                return []
            raise


def _lost(url: str, exc: sa.exc.DBAPIError) -> WarehouseUnavailable:
    reason = (str(exc.orig).strip().splitlines() or ["unknown error"])[0]
    return WarehouseUnavailable(f"lost the warehouse at {redact_url(url)}: {redact(reason)}")


def _forecasts(settings: Settings) -> sa.Table:
    return _table(settings.warehouse.table, settings.warehouse.schema_name)


@functools.lru_cache(maxsize=32)
def _table(name: str, schema: str | None) -> sa.Table:
    # One Table object per name: SQLAlchemy caches compiled statements per Table, so a
    # new one per request would compile every query again (~3 ms each).
    return forecasts_table(name, schema)


# --- forecasts ------------------------------------------------------------------------------


def latest_origin(settings: Settings, model_name: str | None = None) -> dt.date | None:
    """The latest forecast origin of ``model_name`` (default ``settings.model.name``)."""
    t = _forecasts(settings)
    name = model_name or settings.model.name
    query = sa.select(sa.func.max(t.c.forecast_origin)).where(t.c.model_name == name)
    rows = _run(settings.warehouse_url, t, query)
    return _as_date(rows[0][0]) if rows else None


def forecast_page(
    settings: Settings,
    keys: dict[str, str] | None = None,
    origin: dt.date | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    after: str | None = None,
    limit: int = 500,
    model_name: str | None = None,
) -> ForecastPage:
    """Stored forecasts of one origin (default: the latest; with ``after``, the cursor's),
    ordered by (unique_id, target_date), at most ``limit`` rows after the cursor ``after``.

    ``keys`` filters by series keys (all of them: one series; some: every series with those
    values); ``start``/``end`` bound the target date (inclusive). Raises
    :class:`UnknownSeriesKey` for a key the series do not have, :class:`InvalidCursor` for a
    cursor not made here, ``ValueError`` for ``limit`` < 1. One query in the common case
    (the latest origin is a subquery; the series keys are cached per model).
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    name = model_name or settings.model.name
    position = _decode_cursor(after) if after else None
    if origin is None and position is not None:
        origin = position[2]  # the next pages stay on the first page's origin
    t, url = _forecasts(settings), settings.warehouse_url
    where = [t.c.model_name == name, t.c.forecast_origin == (origin or _latest(t, name))]
    if keys:
        series = _series_filter(url, t, name, where, keys)
        if series is None:
            return ForecastPage([], origin or latest_origin(settings, name), None)
        where.append(series)
    if start is not None:
        where.append(t.c.target_date >= start)
    if end is not None:
        where.append(t.c.target_date <= end)
    if position is not None:
        uid, day, _ = position  # >= on unique_id bounds the index scan; the rest filters
        where += [t.c.unique_id >= uid, sa.or_(t.c.unique_id > uid, t.c.target_date > day)]
    cols = [t.c[c] for c in FORECAST_FIELDS]
    query = sa.select(*cols).where(*where).order_by(t.c.unique_id, t.c.target_date)
    rows = [_row(r._mapping) for r in _run(url, t, query.limit(limit + 1))]
    if not rows:
        return ForecastPage([], origin or latest_origin(settings, name), None)
    cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        cursor = _encode_cursor(last["unique_id"], last["target_date"], last["forecast_origin"])
    return ForecastPage(rows, rows[0]["forecast_origin"], cursor)


def _latest(t: sa.Table, name: str) -> Any:
    return (
        sa.select(sa.func.max(t.c.forecast_origin)).where(t.c.model_name == name).scalar_subquery()
    )


def _row(m: Any) -> dict[str, Any]:
    out = {c: m[c] for c in FORECAST_FIELDS}
    out["series_keys"] = _keys_of(m["series_keys"])
    out["forecast_origin"] = _as_date(m["forecast_origin"])
    out["target_date"] = _as_date(m["target_date"])
    for b in _BOUNDS:
        v = out[b]
        out[b] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    out["horizon"] = int(out["horizon"])
    out["model_version"] = str(out["model_version"])
    return out


def _keys_of(text: str | None) -> dict[str, str]:
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in parsed.items()}


def _as_date(v: Any) -> dt.date | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return pd.Timestamp(v).date()


def _encode_cursor(unique_id: str, target_date: dt.date, origin: dt.date | None) -> str:
    days = [target_date.isoformat(), origin.isoformat() if origin else None]
    raw = json.dumps([unique_id, *days], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, dt.date, dt.date | None]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        uid, day, origin = json.loads(raw)
        if not isinstance(uid, str) or not isinstance(day, str):
            raise ValueError("not a (series, date, origin) triple")
        return uid, dt.date.fromisoformat(day), dt.date.fromisoformat(origin) if origin else None
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(
            f"cursor {cursor[:60]!r} is not one this service returned: pass the next_cursor "
            "of the previous page unchanged, or omit it for the first page"
        ) from None


def _series_filter(
    url: str, t: sa.Table, model: str, where: list[Any], keys: dict[str, str]
) -> sa.ColumnElement[bool] | None:
    """The condition selecting the series with ``keys`` (None: no series can match).

    All keys given: the series id, as :func:`salesflow.schema.make_unique_id` builds it (the
    primary-key index). Only ``store``/``dept``: their columns. Otherwise the origin's
    series ids are matched key by key here and selected by id.
    """
    names = _key_names(url, t, model)
    if names is None:
        return None
    if unknown := sorted(set(keys) - set(names)):
        raise UnknownSeriesKey(
            f"unknown series key(s) {unknown}: the forecasts' series keys are {names}"
        )
    if set(keys) == set(names):
        return t.c.unique_id == series_id([str(keys[k]) for k in names])
    if set(keys) <= {"store", "dept"}:
        return sa.and_(*(t.c[k] == str(v) for k, v in keys.items()))
    ids = [r[0] for r in _run(url, t, sa.select(t.c.unique_id).where(*where).distinct())]
    wanted = {names.index(k): str(v) for k, v in keys.items()}
    hits = [u for u in ids if _matches(u, wanted, len(names))]
    return t.c.unique_id.in_(hits) if hits else None


def series_id(values: list[str]) -> str:
    """The unique_id of the series with these key values (in key order), as
    :func:`salesflow.schema.make_unique_id` builds it: "%" -> "%25" and "/" -> "%2F" inside
    a value, values joined by "/" (here per value, without pandas: it is on every request)."""
    return "/".join(v.replace("%", "%25").replace("/", "%2F") for v in values)


def _matches(unique_id: str, wanted: dict[int, str], n_keys: int) -> bool:
    parts = unique_id.split("/")
    if len(parts) != n_keys:
        return False
    values = [p.replace("%2F", "/").replace("%25", "%") for p in parts]
    return all(values[i] == v for i, v in wanted.items())


_KEYS_TTL_S = 30.0
_KEY_NAMES: dict[tuple[str, str | None, str, str], tuple[float, list[str]]] = {}


def _key_names(url: str, t: sa.Table, model: str) -> list[str] | None:
    """The series keys, in order, of the model's forecasts (None: it has none); cached
    for a few seconds, as every filtered request needs them."""
    cache_key = (url, t.schema, t.name, model)
    hit = _KEY_NAMES.get(cache_key)
    if hit is not None and time.monotonic() - hit[0] < _KEYS_TTL_S:
        return hit[1]
    rows = _run(url, t, sa.select(t.c.series_keys).where(t.c.model_name == model).limit(1))
    if not rows:
        return None
    names = list(_keys_of(rows[0][0]))
    _KEY_NAMES[cache_key] = (time.monotonic(), names)
    return names


def series_forecast(
    settings: Settings, keys: dict[str, str], origin: dt.date | None = None
) -> pd.DataFrame:
    """Every horizon of the series with ``keys`` at ``origin`` (default: the latest).

    Columns: unique_id, forecast_origin, target_date (datetime64), horizon, forecast,
    lo_80, hi_80, lo_95, hi_95, model_name, model_version, plus one column per series key.
    """
    rows: list[dict[str, Any]] = []
    after = None
    while True:
        page = forecast_page(settings, keys, origin, after=after, limit=5000)
        rows += page.rows
        if page.next_cursor is None:
            break
        after = page.next_cursor
    return _frame(rows)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    cols = [c for c in FORECAST_FIELDS if c != "series_keys"]
    if not rows:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame(rows)
    keys = pd.DataFrame(list(out.pop("series_keys")), index=out.index)
    out = pd.concat([out[cols], keys], axis=1)
    for c in ("forecast_origin", "target_date"):
        out[c] = pd.to_datetime(out[c])
    return out


def store_totals(settings: Settings, origin: dt.date | None = None) -> pd.DataFrame:
    """Per store and target date: the sum of the forecasts and the series summed, at
    ``origin`` (default: the latest). Columns: store, target_date (datetime64), forecast,
    n_series. Series without a ``store`` key are summed by their first key."""
    cols = ["store", "target_date", "forecast", "n_series"]
    origin = origin or latest_origin(settings)
    if origin is None:
        return pd.DataFrame(columns=cols)
    t = _forecasts(settings)
    group = sa.func.coalesce(t.c.store, t.c.unique_id)
    no_store = t.c.store.is_(None)
    query = (
        sa.select(group, no_store, t.c.target_date, sa.func.sum(t.c.forecast), sa.func.count())
        .where(t.c.model_name == settings.model.name, t.c.forecast_origin == origin)
        .group_by(group, no_store, t.c.target_date)
    )
    found = _run(settings.warehouse_url, t, query)
    out = pd.DataFrame([tuple(r) for r in found], columns=["store", "_id", *cols[1:]])
    if out.empty:
        return out.drop(columns="_id")
    # A series without a store column (other keys): its first key stands for the store.
    ids = out["_id"].astype(bool)
    first = out.loc[ids, "store"].astype(str).str.split("/").str[0]
    out.loc[ids, "store"] = first.str.replace("%2F", "/").str.replace("%25", "%")
    out = out.drop(columns="_id").groupby(["store", "target_date"], as_index=False).sum()
    out["target_date"] = pd.to_datetime(out["target_date"])
    out["n_series"] = out["n_series"].astype(int)
    order = pd.to_numeric(out["store"], errors="coerce")
    return (
        out.assign(_n=order).sort_values(["_n", "store", "target_date"]).drop(columns="_n")
    ).reset_index(drop=True)
