"""The training flow under prefect_test_harness, with a temp MLflow registry."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_training_flow_registers_a_champion(harness, tmp_path, monkeypatch):
    """A first run registers version 1 with the champion alias and logs its metrics."""
    from flows.training import training_flow
    from salesflow.registry import client, get_alias_version

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    result = training_flow(env="test")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mv = get_alias_version(uri, "salesflow-forecaster", "champion")
    assert mv is not None and str(mv.version) == result["version"] == "1"
    run = client(uri).get_run(result["run_id"])
    assert run.data.metrics["model_wmae"] == pytest.approx(result["metrics"]["forecast"]["wmae"])
    assert run.data.metrics["seasonal_naive_wmae"] > 0
    assert {"data_fingerprint", "code_version"} <= set(run.data.tags)
    assert "features" in run.data.params
    arts = {a.path for a in client(uri).list_artifacts(result["run_id"], "plots")}
    assert {"plots/feature_importance.png", "plots/error_by_horizon.png"} <= arts

    second = training_flow(env="test")
    assert second["version"] == "2" and second["alias"] is None
    assert str(get_alias_version(uri, "salesflow-forecaster", "champion").version) == "1"


def test_champion_loads_back_and_forecasts(harness, tmp_path, monkeypatch, small_data):
    """The registered champion loads from models:/name@champion and forecasts."""
    from flows.training import training_flow
    from salesflow.registry import load_forecaster

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    training_flow(env="test")
    model, mv = load_forecaster(
        f"sqlite:///{tmp_path}/mlflow.db", "salesflow-forecaster", "champion"
    )
    out = model.predict(small_data)
    assert len(out) > 0 and {"lo_80", "hi_95"} <= set(out.columns)


def test_invalid_data_stops_before_features(harness, tmp_path, monkeypatch):
    """Bad input fails the validation task; no model is registered."""
    from flows.training import training_flow
    from salesflow.registry import get_alias_version
    from salesflow.validation import DataValidationError

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "store,dept,date,sales\n1,1,2012-01-06,10\n1,1,2012-01-06,11\n1,1,2012-01-13,-5e9\n"
    )
    with pytest.raises(DataValidationError, match="unique"):
        training_flow(env="test", source="long", path=str(bad))
    assert (
        get_alias_version(f"sqlite:///{tmp_path}/mlflow.db", "salesflow-forecaster", "champion")
        is None
    )
