"""Read-only queries on the MLflow registry and the warehouse's audit and accuracy tables
(re-exported by :mod:`salesflow.serving.queries`): model versions, audit events, realized
accuracy and the facts of the loaded champion. Nothing there yet gives an empty result."""

from __future__ import annotations

import datetime as dt
import json
import math
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import pandas as pd

from salesflow.config.settings import Settings
from salesflow.governance.lifecycle import read_audit
from salesflow.monitor.monitoring import accuracy_table
from salesflow.storage.sqlengine import sqlite_path
from salesflow.storage.sqlstore import read_frame

if TYPE_CHECKING:
    from salesflow.serving.champion import LoadedChampion

__all__ = ["STATUS_TAG", "audit_events", "model_info", "model_versions", "realized_accuracy"]

STATUS_TAG = "salesflow.status"


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
        "trained_until": pd.Timestamp(trained).date() if trained is not None else None,
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
