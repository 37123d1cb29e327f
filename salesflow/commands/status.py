"""What a ``salesflow`` command would use and what it would find (``salesflow status``).

:func:`gather_status` collects, without writing anything: the config env, the MLflow
registry, the warehouse (passwords hidden) and where each came from (argument, environment
variable, YAML file, default); the champion and the latest versions with their status tags;
the last forecast origin and its rows; the last audit rows; and warnings when the audit
trail or the forecasts are split between the configured warehouse and the local SQLite one
(a terminal without ``SALESFLOW_WAREHOUSE_URL`` writes to the latter). Everything missing is
reported as "none yet", never raised; a store that cannot be read is reported with the error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from salesflow.config.settings import DEFAULT_CONFIG_DIR, Settings, SettingsError, load_settings
from salesflow.errors import redact
from salesflow.storage.sqlengine import connect, open_engine, redact_url, sqlite_path

N_VERSIONS = 5
N_AUDIT = 5
STATUS_TAG = "salesflow.status"


@dataclass
class Source:
    """A value a command will use and where it came from."""

    value: str
    origin: str


@dataclass
class Status:
    env: Source
    registry: Source
    warehouse: Source
    model_name: str
    versions: list[dict[str, Any]] = field(default_factory=list)
    versions_note: str = ""
    last_forecast: dict[str, Any] | None = None
    forecast_note: str = ""
    audit: list[dict[str, Any]] = field(default_factory=list)
    audit_note: str = ""
    warnings: list[str] = field(default_factory=list)


def gather_status(env: str | None = None, config_dir: Path | None = None) -> Status:
    """The facts of ``salesflow status --env ENV`` (see the module docstring)."""
    warnings: list[str] = []
    settings = _load(env, config_dir, warnings)
    yamls = _yaml_layers(settings.env, config_dir or DEFAULT_CONFIG_DIR)
    st = Status(
        env=_env_source(env),
        registry=_registry_source(settings, yamls),
        warehouse=_warehouse_source(settings, yamls),
        model_name=settings.model.name,
        warnings=warnings,
    )
    st.versions, st.versions_note = _versions(settings)
    st.last_forecast, st.forecast_note = _last_forecast(settings.warehouse_url, settings)
    st.audit, st.audit_note = _audit(settings.warehouse_url, settings)
    st.warnings += _split_warnings(settings)
    return st


def _load(env: str | None, config_dir: Path | None, warnings: list[str]) -> Settings:
    """The settings; an env that requires a warehouse variable or a shared MLflow registry
    that is unset still loads (without the requirement), with a warning per requirement:
    status shows what is missing."""
    relax: dict[str, dict[str, bool]] = {}
    for step in (
        {"warehouse": {"require_url": False}},
        {"mlflow": {"require_tracking_uri": False}},
    ):
        try:
            return load_settings(env, config_dir, **relax)
        except SettingsError as exc:
            warnings.append(f"{redact(exc)} (every command of this env fails until it is set)")
            relax.update(step)
    return load_settings(env, config_dir, **relax)


def _env_source(env: str | None) -> Source:
    if env:
        return Source(env, "--env")
    if os.environ.get("SALESFLOW_ENV"):
        return Source(os.environ["SALESFLOW_ENV"], "environment variable SALESFLOW_ENV")
    return Source("dev", "default")


def _yaml_layers(env: str, config_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, content) of configs/<env>.yaml then base.yaml: the first that sets a key wins."""
    out = []
    for name in (f"{env}.yaml", "base.yaml"):
        path = Path(config_dir) / name
        if path.exists():
            out.append((f"configs/{name}", yaml.safe_load(path.read_text(encoding="utf-8")) or {}))
    return out


def _yaml_origin(layers: list[tuple[str, dict[str, Any]]], section: str, key: str) -> str | None:
    for name, content in layers:
        if (content.get(section) or {}).get(key) is not None:
            return name
    return None


def _registry_source(s: Settings, layers: list[tuple[str, dict[str, Any]]]) -> Source:
    uri = redact_uri(s.tracking_uri)
    if os.environ.get("SALESFLOW_MLFLOW__TRACKING_URI"):
        return Source(uri, "environment variable SALESFLOW_MLFLOW__TRACKING_URI")
    if s.mlflow.tracking_uri and (name := _yaml_origin(layers, "mlflow", "tracking_uri")):
        return Source(uri, name)
    return Source(uri, "default: SQLite file under paths.local_dir")


def _warehouse_source(s: Settings, layers: list[tuple[str, dict[str, Any]]]) -> Source:
    url = redact_url(s.warehouse_url)
    var = s.warehouse.url_env
    if var and os.environ.get(var):
        return Source(url, f"environment variable {var} (warehouse.url_env)")
    if os.environ.get("SALESFLOW_WAREHOUSE__URL"):
        return Source(url, "environment variable SALESFLOW_WAREHOUSE__URL")
    if s.warehouse.url and (name := _yaml_origin(layers, "warehouse", "url")):
        return Source(url, name)
    unset = f"; {var} is unset" if var else ""
    return Source(url, f"default: SQLite file under paths.local_dir{unset}")


def redact_uri(uri: str) -> str:
    """A tracking URI with its password hidden (database and http URLs alike)."""
    return redact(uri)


# --- the registry -------------------------------------------------------------------------


def _versions(s: Settings) -> tuple[list[dict[str, Any]], str]:
    """The latest versions (newest first) with aliases, status and training window."""
    path = sqlite_path(s.tracking_uri) if s.tracking_uri.startswith("sqlite:") else None
    if path is not None and not path.exists():
        return [], f"none yet (no registry file at {path})"
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    c = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
    try:
        aliases = c.get_registered_model(s.model.name).aliases
        found = c.search_model_versions(f"name = '{s.model.name}'")
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
            return [], f"none yet (no model {s.model.name!r} in the registry)"
        return [], f"registry not readable: {redact(exc.message)[:300]}"
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in sorted(found, key=lambda m: int(m.version), reverse=True)[:N_VERSIONS]:
        tags = mv.tags or {}
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "status": tags.get(STATUS_TAG, "-"),
                "trained_until": tags.get("trained_until", "-"),
                "env": tags.get("env", "-"),
                "created": _ms_date(mv.creation_timestamp),
            }
        )
    return rows, "" if rows else f"none yet (model {s.model.name!r} has no version)"


def _ms_date(ms: int | None) -> str:
    import datetime as dt

    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- the warehouse ------------------------------------------------------------------------


def _readable(url: str) -> str | None:
    """None when the warehouse can be read, else why not (a missing SQLite file: none yet)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return f"none yet (no warehouse file at {path})"
    return None


def _query(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    with open_engine(url) as engine, connect(engine, url) as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]


def _table(conn_url: str, name: str, schema: str | None) -> str | None:
    """The quoted ``schema.table`` if it exists in the warehouse, else None."""
    with open_engine(conn_url) as engine, connect(engine, conn_url) as conn:
        if not sa.inspect(conn).has_table(name, schema=schema):
            return None
        prep = engine.dialect.identifier_preparer
        return (f"{prep.quote(schema)}." if schema else "") + prep.quote(name)


def _last_forecast(url: str, s: Settings) -> tuple[dict[str, Any] | None, str]:
    """The latest forecast origin of the model: its model version(s), rows, series, write time."""
    if why := _readable(url):
        return None, why
    try:
        table = _table(url, s.warehouse.table, s.warehouse.schema_name)
        if table is None:
            return None, f"none yet (no table {s.warehouse.table})"
        rows = _query(
            url,
            f"SELECT forecast_origin, model_version, count(*) AS n_rows, "  # noqa: S608 - quoted
            f"count(DISTINCT unique_id) AS n_series, max(created_at) AS written_at FROM {table} "
            "WHERE model_name = :m AND forecast_origin = (SELECT max(forecast_origin) FROM "
            f"{table} WHERE model_name = :m) GROUP BY forecast_origin, model_version",
            m=s.model.name,
        )
    except Exception as exc:  # noqa: BLE001 - status reports, it never fails
        return None, f"warehouse not readable: {redact(exc)[:300]}"
    if not rows:
        return None, f"none yet (no forecast of {s.model.name} in {s.warehouse.table})"
    return {
        "origin": str(rows[0]["forecast_origin"])[:10],
        "model_versions": sorted(str(r["model_version"]) for r in rows),
        "rows": sum(int(r["n_rows"]) for r in rows),
        "series": max(int(r["n_series"]) for r in rows),
        "written_at": str(max(str(r["written_at"]) for r in rows))[:19],
        "last_run": _last_run(url, s),
    }, ""


def _last_run(url: str, s: Settings) -> dict[str, Any] | None:
    """The model's latest row of the forecast-runs table (who wrote, from which env), if any."""
    try:
        table = _table(url, s.warehouse.runs_table, s.warehouse.schema_name)
        if table is None:
            return None
        rows = _query(
            url,
            "SELECT forecast_origin, flow_run_id, env, rows_written, finished_at "  # noqa: S608
            f"FROM {table} WHERE model_name = :m ORDER BY finished_at DESC LIMIT 1",
            m=s.model.name,
        )
    except Exception:  # noqa: BLE001 - an older or foreign table: the forecasts say enough
        return None
    if not rows:
        return None
    # Times to the second; ids and counts whole (a cut flow run id cannot be looked up).
    return {
        k: None if v is None else str(v)[:19] if k.endswith("_at") else v
        for k, v in rows[0].items()
    }


def _audit(url: str, s: Settings) -> tuple[list[dict[str, Any]], str]:
    """The model's last audit rows, newest first."""
    if why := _readable(url):
        return [], why
    try:
        table = _table(url, s.monitor.audit_table, s.warehouse.schema_name)
        if table is None:
            return [], f"none yet (no table {s.monitor.audit_table})"
        rows = _query(
            url,
            "SELECT at, action, from_version, to_version, actor, reason "  # noqa: S608 - quoted
            f"FROM {table} WHERE model_name = :m ORDER BY at DESC LIMIT {N_AUDIT}",
            m=s.model.name,
        )
    except Exception as exc:  # noqa: BLE001 - status reports, it never fails
        return [], f"warehouse not readable: {redact(exc)[:300]}"
    for r in rows:
        r["at"] = str(r["at"])[:19]
    return rows, "" if rows else f"none yet (no audit row of {s.model.name})"


def _count(url: str, name: str, model: str) -> int:
    try:
        table = _table(url, name, None)
        if table is None:
            return 0
        sql = f"SELECT count(*) AS n FROM {table} WHERE model_name = :m"  # noqa: S608 - quoted
        return int(_query(url, sql, m=model)[0]["n"])
    except Exception:  # noqa: BLE001 - a local file we cannot read holds nothing we can show
        return 0


def _split_warnings(s: Settings) -> list[str]:
    """Warn when the local SQLite warehouse holds rows of this model while the configured
    warehouse is another one: some command ran without the warehouse variable."""
    local = s.local_dir / "warehouse.db"
    configured = sqlite_path(s.warehouse_url) if s.warehouse_url.startswith("sqlite") else None
    if configured is not None and configured.resolve() == local.resolve():
        return []
    if not local.exists():
        return []
    url = f"sqlite:///{local}"
    audit = _count(url, s.monitor.audit_table, s.model.name)
    forecasts = _count(url, s.warehouse.table, s.model.name)
    if not audit and not forecasts:
        return []
    var = s.warehouse.url_env or "the warehouse URL variable"
    return [
        f"the trail is split: the local SQLite warehouse {local} also holds {audit} audit "
        f"row(s) and {forecasts} forecast row(s) of {s.model.name}, while this env uses "
        f"{redact_url(s.warehouse_url)}; a command ran without {var} set. Run every "
        f"terminal and the worker with the same {var}"
    ]
