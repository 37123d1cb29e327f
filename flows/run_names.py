"""Flow run names that say what ran: ``<flow> env=<env> model=<model> as-of=<date>``.

Prefect calls the ``flow_run_name`` callable as the run starts (parameters validated); it
reads the run's parameters and loads the settings they select (YAML and environment only,
no registry or warehouse call), so the name shows the env and model actually used. A
settings error leaves the name built from the raw parameters: the flow itself reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.runtime import flow_run

from salesflow.settings import load_settings, settings_overrides


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
    except Exception:  # noqa: BLE001 - a name must never fail the run; the flow reports it
        pass
    parts = [flow, f"env={env or 'default'}"]
    if model:
        parts.append(f"model={model}")
    parts.append(f"as-of={as_of or 'latest'}")
    if params.get("origin"):
        parts.append(f"origin={params['origin']}")
    return " ".join(parts)


def run_name(flow: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable for ``@flow(flow_run_name=run_name("train-forecaster"))``."""

    def name() -> str:
        return describe_run(flow, dict(flow_run.parameters or {}))

    return name
