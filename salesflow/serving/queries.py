"""Read-only queries behind the API and the dashboard: stored forecasts (keyset pages),
store totals, model versions, audit events, realized accuracy and the champion's facts.

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
import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from salesflow.errors import UserError
from salesflow.lifecycle import read_audit
from salesflow.monitoring import accuracy_table
from salesflow.schema import make_unique_id
from salesflow.settings import Settings
from salesflow.sqlengine import connect, sqlite_path
from salesflow.sqlstore import read_frame
from salesflow.warehouse import forecasts_table

if TYPE_CHECKING:
    from salesflow.serving.champion import LoadedChampion

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
    "store_totals",
]

STATUS_TAG = "salesflow.status"
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
        except (sa.exc.ProgrammingError, sa.exc.OperationalError):
            if _missing_table(conn, table):
                return []
            raise


def _forecasts(settings: Settings) -> sa.Table:
    return forecasts_table(settings.warehouse.table, settings.warehouse.schema_name)


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
    """Stored forecasts of one origin (default: the latest), ordered by (unique_id,
    target_date), at most ``limit`` rows after the cursor ``after``.

    ``keys`` filters by series keys (all of them: one series; some: every series with those
    values); ``start``/``end`` bound the target date (inclusive). Raises
    :class:`UnknownSeriesKey` for a key the series do not have, :class:`InvalidCursor` for a
    cursor not made here, ``ValueError`` for ``limit`` < 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    name = model_name or settings.model.name
    position = _decode_cursor(after) if after else None
    origin = origin or latest_origin(settings, name)
    if origin is None:
        return ForecastPage([], None, None)
    t = _forecasts(settings)
    url = settings.warehouse_url
    where = [t.c.model_name == name, t.c.forecast_origin == origin]
    if keys:
        series = _series_filter(url, t, where, keys)
        if series is None:
            return ForecastPage([], origin, None)
        where.append(series)
    if start is not None:
        where.append(t.c.target_date >= start)
    if end is not None:
        where.append(t.c.target_date <= end)
    if position is not None:
        uid, day = position  # >= on unique_id bounds the index scan; the rest filters
        where += [t.c.unique_id >= uid, sa.or_(t.c.unique_id > uid, t.c.target_date > day)]
    cols = [t.c[c] for c in FORECAST_FIELDS]
    query = sa.select(*cols).where(*where).order_by(t.c.unique_id, t.c.target_date)
    rows = [_row(r._mapping) for r in _run(url, t, query.limit(limit + 1))]
    cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        cursor = _encode_cursor(rows[-1]["unique_id"], rows[-1]["target_date"])
    return ForecastPage(rows, origin, cursor)


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


def _encode_cursor(unique_id: str, target_date: dt.date) -> str:
    raw = json.dumps([unique_id, target_date.isoformat()], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, dt.date]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        uid, day = json.loads(raw)
        if not isinstance(uid, str) or not isinstance(day, str):
            raise ValueError("not a (series, date) pair")
        return uid, dt.date.fromisoformat(day)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(
            f"cursor {cursor[:60]!r} is not one this service returned: pass the next_cursor "
            "of the previous page unchanged, or omit it for the first page"
        ) from None


def _series_filter(
    url: str, t: sa.Table, where: list[Any], keys: dict[str, str]
) -> sa.ColumnElement[bool] | None:
    """The condition selecting the series with ``keys`` (None: no series can match).

    All keys given: the series id, as :func:`salesflow.schema.make_unique_id` builds it (the
    primary-key index). Only ``store``/``dept``: their columns. Otherwise the origin's
    series ids are matched key by key here and selected by id.
    """
    names = _key_names(url, t, where)
    if names is None:
        return None
    if unknown := sorted(set(keys) - set(names)):
        raise UnknownSeriesKey(
            f"unknown series key(s) {unknown}: the forecasts' series keys are {names}"
        )
    if set(keys) == set(names):
        one = pd.DataFrame({k: [str(keys[k])] for k in names})
        return t.c.unique_id == str(make_unique_id(one, names).iloc[0])
    if set(keys) <= {"store", "dept"}:
        return sa.and_(*(t.c[k] == str(v) for k, v in keys.items()))
    ids = [r[0] for r in _run(url, t, sa.select(t.c.unique_id).where(*where).distinct())]
    wanted = {names.index(k): str(v) for k, v in keys.items()}
    hits = [u for u in ids if _matches(u, wanted, len(names))]
    return t.c.unique_id.in_(hits) if hits else None


def _matches(unique_id: str, wanted: dict[int, str], n_keys: int) -> bool:
    parts = unique_id.split("/")
    if len(parts) != n_keys:
        return False
    values = [p.replace("%2F", "/").replace("%25", "%") for p in parts]
    return all(values[i] == v for i, v in wanted.items())


def _key_names(url: str, t: sa.Table, where: list[Any]) -> list[str] | None:
    """The series keys, in order, of the forecasts matching ``where`` (None: no rows)."""
    rows = _run(url, t, sa.select(t.c.series_keys).where(*where).limit(1))
    return list(_keys_of(rows[0][0])) if rows else None


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


# --- registry, audit, accuracy --------------------------------------------------------------


def _registry_missing(settings: Settings) -> bool:
    uri = settings.tracking_uri
    path = sqlite_path(uri) if uri.startswith("sqlite:") else None
    return path is not None and not path.exists()


def model_versions(settings: Settings, limit: int = 50) -> list[dict[str, Any]]:
    """The model's versions, newest first: version, aliases, status (the
    ``salesflow.status`` tag or None), trained_until, env, created (UTC), run_id,
    backtest_wmae (the run's ``model_wmae``) and wmae_vs_seasonal_naive; [] if none."""
    if _registry_missing(settings):
        return []
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri, name = settings.tracking_uri, settings.model.name
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        aliases = c.get_registered_model(name).aliases
        found = c.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
            return []
        raise
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    out = []
    for mv in sorted(found, key=lambda m: int(m.version), reverse=True)[:limit]:
        tags = mv.tags or {}
        metrics = _run_metrics(c, mv.run_id)
        out.append(
            {
                "version": str(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "status": tags.get(STATUS_TAG),
                "trained_until": tags.get("trained_until"),
                "env": tags.get("env"),
                "created": _ms_time(mv.creation_timestamp),
                "run_id": mv.run_id,
                "backtest_wmae": metrics.get("model_wmae"),
                "wmae_vs_seasonal_naive": metrics.get("model_wmae_vs_seasonal_naive"),
            }
        )
    return out


def _run_metrics(c: Any, run_id: str | None) -> dict[str, float]:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}
    try:
        return dict(c.get_run(run_id).data.metrics)
    except MlflowException:
        return {}


def _ms_time(ms: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC) if ms else None


def audit_events(settings: Settings, limit: int = 200) -> list[dict[str, Any]]:
    """The model's audit rows (promote / reject / rollback), newest first: event_id, at
    (UTC datetime), action, from_version, to_version, reason, actor, env, flow_run_id and
    metrics (parsed JSON, or None)."""
    rows = read_audit(
        settings.warehouse_url,
        settings.monitor.audit_table,
        settings.warehouse.schema_name,
        settings.model.name,
    )
    out = []
    for r in rows.iloc[::-1].head(limit).to_dict("records"):
        item = {k: (None if _is_null(v) else v) for k, v in r.items()}
        item["at"] = pd.Timestamp(r["at"]).to_pydatetime() if not _is_null(r["at"]) else None
        item["metrics"] = _json_or_none(r.get("metrics"))
        out.append(item)
    return out


def _is_null(v: Any) -> bool:
    return v is None or (not isinstance(v, (dict, list, str)) and bool(pd.isna(v)))


def _json_or_none(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def realized_accuracy(settings: Settings) -> pd.DataFrame:
    """The model's realized-accuracy rows (:func:`salesflow.monitoring.accuracy_table`
    columns), ordered by version, origin, horizon; empty when none were computed yet."""
    table = accuracy_table(settings.monitor.accuracy_table, settings.warehouse.schema_name)
    return read_frame(settings.warehouse_url, table, model_name=settings.model.name)


# --- the loaded champion --------------------------------------------------------------------


def model_info(settings: Settings, loaded: LoadedChampion) -> dict[str, Any]:
    """The facts of the loaded champion: name, version, alias, run_id, loaded_at,
    trained_until, horizon, freq, keys, covariates, features, data_fingerprint,
    code_version and the backtest metrics of its MLflow run (empty if unreadable)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    model = loaded.model
    uri = settings.tracking_uri
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tags: dict[str, str] = {}
    with suppress(MlflowException):
        tags = dict(c.get_model_version(loaded.name, loaded.version).tags or {})
    metrics = _run_metrics(c, loaded.run_id)
    trained = getattr(model, "trained_until_", None)
    return {
        "name": loaded.name,
        "version": loaded.version,
        "alias": loaded.alias,
        "run_id": loaded.run_id,
        "loaded_at": loaded.loaded_at,
        "trained_until": _as_date(trained) if trained is not None else None,
        "horizon": int(getattr(model, "horizon", 0) or 0) or None,
        "freq": getattr(model, "freq_", None),
        "keys": list(getattr(model, "keys_", []) or []),
        "covariates": list(getattr(model, "covariates_", []) or []),
        "features": list(getattr(model, "feature_names_", []) or []),
        "data_fingerprint": tags.get("data_fingerprint"),
        "code_version": tags.get("code_version"),
        "env": tags.get("env"),
        "backtest": {k: float(v) for k, v in sorted(metrics.items()) if _finite(v)},
    }


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
