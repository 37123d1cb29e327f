"""What the operator sees of a run: flow run names that say what ran, tags on runs started
from the CLI, the retrain automation's name and description (built by Prefect's own deploy
code from deployments/prefect.yaml), and MLflow version descriptions from the training
summary."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from flows.run_names import describe_run

PREFECT_YAML = Path(__file__).resolve().parent.parent / "deployments" / "prefect.yaml"


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _runs(prefix: str) -> list:
    """Flow runs of the harness's server whose name starts with ``prefix``."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [r for r in client.read_flow_runs(limit=200) if r.name.startswith(prefix)]


# --- flow run names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "flow", ["train-forecaster", "batch-forecast", "monitor-forecasts", "retrain-forecaster"]
)
def test_run_name_says_flow_env_model_and_as_of(flow, monkeypatch, tmp_path):
    """The name carries the flow, the env, the env's model and the as-of date (no champion
    in an empty registry)."""
    monkeypatch.delenv("SALESFLOW_ENV", raising=False)
    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    name = describe_run(flow, {"env": "scenario", "as_of": "2012-07-27"})
    assert name == f"{flow} env=scenario model=salesflow-scenario as-of=2012-07-27"


def test_run_name_uses_the_env_variable_and_the_origin(monkeypatch, tmp_path):
    """Without an env parameter the name shows $SALESFLOW_ENV's env and model; no as-of is
    'latest'; a forecast origin is shown."""
    monkeypatch.setenv("SALESFLOW_ENV", "scenario")
    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    name = describe_run("batch-forecast", {"env": None, "origin": "2012-08-03"})
    assert name == (
        "batch-forecast env=scenario model=salesflow-scenario as-of=latest origin=2012-08-03"
    )


def test_run_name_never_fails_on_bad_settings():
    """An env without a config still gives a name (the flow reports the error itself)."""
    assert describe_run("train-forecaster", {"env": "nope"}).startswith("train-forecaster env=nope")


def test_cli_run_is_named_and_tagged(harness, tmp_path, monkeypatch):
    """`salesflow forecast --env test --as-of D` creates a flow run named after the flow,
    env, model and D, tagged salesflow, cli, env:test and forecast (here it then fails:
    no champion yet)."""
    from salesflow.commands.cli import main

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    assert main(["forecast", "--env", "test", "--as-of", "2011-06-03"]) != 0
    (run,) = _runs("batch-forecast env=test model=salesflow-forecaster as-of=2011-06-03")
    assert {"salesflow", "cli", "env:test", "forecast"} <= set(run.tags)


# --- the retrain automation ---------------------------------------------------------------


def _triggers() -> list[tuple[str, dict]]:
    spec = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    return [(d["name"], t) for d in spec["deployments"] for t in (d.get("triggers") or [])]


def test_retrain_automation_is_named_and_described():
    """`prefect deploy`'s own trigger code turns the YAML trigger into an automation named
    'retrain ... on drift or degradation' with a description, not the default name; every
    key of the YAML trigger is a field of Prefect's model (a typo would be ignored)."""
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    (deployment, spec), *others = _triggers()
    assert not others and deployment == "on-drift"
    (trigger,) = _initialize_deployment_triggers(deployment, [dict(spec)])
    assert set(spec) <= set(type(trigger).model_fields)
    trigger.set_deployment_id(uuid4())
    automation = trigger.as_automation()
    assert automation.name == "retrain salesflow.model.* on drift or degradation"
    assert "salesflow.drift.detected" in automation.description
    assert "salesflow.performance.degraded" in automation.description
    assert automation.trigger.expect == {
        "salesflow.drift.detected",
        "salesflow.performance.degraded",
    }


# --- MLflow version descriptions ----------------------------------------------------------


def test_registered_version_described_from_training_summary(harness, tmp_path, monkeypatch):
    """Each registered version's description gives its data window, rows and series, the
    backtest WMAE vs seasonal naive, the env and trained-until (as logged on its run); the
    training run is named after flow, env and model; a forecast run's name also gives the
    champion's version from the local registry."""
    from flows.training import training_flow
    from salesflow.modelling.registry import client

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    result = training_flow(env="test")
    c = client(f"sqlite:///{tmp_path}/mlflow.db")
    text = c.get_model_version("salesflow-forecaster", result["version"]).description
    run = c.get_run(result["run_id"]).data
    wmae, naive = run.metrics["model_wmae"], run.metrics["seasonal_naive_wmae"]
    assert f"Trained until {run.tags['trained_until']} (env test)" in text
    assert f"{run.params['data_start']} .. {run.params['data_end']}" in text
    assert f"{int(run.params['n_rows']):,} rows, {int(run.params['n_series']):,} series" in text
    assert f"WMAE {wmae:,.1f} = {wmae / naive:.3f} x seasonal naive ({naive:,.1f})" in text
    assert _runs("train-forecaster env=test model=salesflow-forecaster as-of=latest")

    c.set_registered_model_alias("salesflow-forecaster", "champion", result["version"])
    name = describe_run("batch-forecast", {"env": "test"})
    assert f"model=salesflow-forecaster champion=v{result['version']} as-of=latest" in name
    assert "champion=" not in describe_run("train-forecaster", {"env": "test"})
