"""Flow run names that say what ran:
``<flow> env=<env> model=<model> [champion=v<N>] as-of=<date> [origin=<date>]``.

Prefect calls the ``flow_run_name`` callable as the run starts (parameters validated); it
reads the run's parameters and loads the settings they select, so the name shows the env
and model actually used. The flows that use the champion (forecast, monitor, retrain) also
name its version at the start, read only from a local SQLite registry that exists (cheap; a
remote registry is never called just for a name). A settings error leaves the name built
from the raw parameters: the flow itself reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.runtime import flow_run

from salesflow.config.settings import Settings, load_settings, settings_overrides

CHAMPION_FLOWS = frozenset({"batch-forecast", "monitor-forecasts", "retrain-forecaster"})


def describe_run(flow: str, params: dict[str, Any]) -> str:
    """The run name for ``flow`` with these parameters, e.g.
    ``batch-forecast env=scenario model=salesflow-scenario as-of=2012-07-27``."""
    env, model, as_of = params.get("env"), None, params.get("as_of")
    try:
        s = load_settings(
            env,
            **settings_overrides(
                params.get("source"), params.get("path"), as_of, params.get("overrides")
            ),
        )
        env, model, as_of = s.env, s.model.name, s.data.as_of
        champion = _local_champion(s) if flow in CHAMPION_FLOWS else None
    except Exception:  # noqa: BLE001 - a name must never fail the run; the flow reports it
        champion = None
    parts = [flow, f"env={env or 'default'}"]
    if model:
        parts.append(f"model={model}")
    if champion:
        parts.append(f"champion=v{champion}")
    parts.append(f"as-of={as_of or 'latest'}")
    if params.get("origin"):
        parts.append(f"origin={params['origin']}")
    return " ".join(parts)


def _local_champion(s: Settings) -> str | None:
    """The champion's version from a local SQLite registry file that exists, else None."""
    uri = s.tracking_uri
    if not uri.startswith("sqlite:///") or not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    from salesflow.modelling.registry import get_alias_version

    mv = get_alias_version(uri, s.model.name, s.mlflow.champion_alias)
    return None if mv is None else str(mv.version)


def run_name(flow: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable for ``@flow(flow_run_name=run_name("train-forecaster"))``."""

    def name() -> str:
        return describe_run(flow, dict(flow_run.parameters or {}))

    return name
