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
    from salesflow.modelling.registry import client, get_alias_version

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
    assert second["action"] == "none"  # a later model goes through salesflow retrain
    assert str(get_alias_version(uri, "salesflow-forecaster", "champion").version) == "1"


def test_champion_loads_back_and_forecasts(harness, tmp_path, monkeypatch, small_data):
    """The registered champion loads from models:/name@champion and forecasts."""
    from flows.training import training_flow
    from salesflow.modelling.registry import load_forecaster

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
    from salesflow.data.validation import DataValidationError
    from salesflow.modelling.registry import get_alias_version

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


def _audit(tmp_path):
    from salesflow.governance.lifecycle import read_audit

    return read_audit(f"sqlite:///{tmp_path}/warehouse.db", "model_audit")


def test_first_model_that_fails_the_guardrails_is_rejected_unless_forced(
    harness, tmp_path, monkeypatch
):
    """`salesflow train` registers a model that fails the policy on its own backtest,
    tags it rejected with the reason, sets no champion and exits 3 (audit: reject);
    `--force-champion` makes the next one champion, audited with actor and reason."""
    import contextlib
    import io
    import json

    from salesflow.commands.cli import main
    from salesflow.modelling.registry import client, get_alias_version

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    strict = json.dumps({"policy": {"max_abs_bias_share": 1e-9}})  # no model passes this
    # Not capsys: Prefect's console handler keeps the stream it first saw, and capsys
    # closes its stream after the test (later tests' flow logs would fail).
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        assert main(["train", "--env", "test", "--set", strict]) == 3
    err = stderr.getvalue()
    assert "version 1 of salesflow-forecaster was registered but NOT made champion" in err
    assert get_alias_version(uri, "salesflow-forecaster", "champion") is None
    tags = client(uri).get_model_version("salesflow-forecaster", "1").tags
    assert tags["salesflow.status"] == "rejected"
    assert "exceeds" in tags["salesflow.reject_reason"] and tags["salesflow.reject_reason"] in err
    assert _audit(tmp_path)[["action", "to_version"]].values.tolist() == [["reject", "1"]]

    forced = ["--force-champion", "--reason", "seasonal peak ahead", "--actor", "alice"]
    assert main(["train", "--env", "test", "--set", strict, *forced]) == 0
    assert str(get_alias_version(uri, "salesflow-forecaster", "champion").version) == "2"
    row = _audit(tmp_path).iloc[-1]
    assert (row["action"], row["to_version"], row["actor"]) == ("promote", "2", "alice")
    assert row["reason"].startswith("forced by alice: seasonal peak ahead (policy: reject:")
    assert json.loads(row["metrics"])["forced"] is True


def test_retried_steps_register_once_and_audit_the_first_champion(harness, tmp_path, monkeypatch):
    """The registry failing right after registering, and the warehouse refusing the audit
    row once: the retries reuse version 1 (no duplicate) and the champion is set with
    exactly one audit row, never before it."""
    from flows.training import training_flow
    from salesflow.governance import lifecycle
    from salesflow.modelling.registry import client, get_alias_version
    from salesflow.storage.sqlengine import WarehouseUnavailable
    from tasks import register

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    real_register, real_write, calls = register.log_and_register, lifecycle.write_frame, []

    def lost_reply(*args, **kwargs):
        reg = real_register(*args, **kwargs)
        calls.append("register")
        if calls.count("register") == 1:
            raise ConnectionResetError("registry connection reset after the version was created")
        return reg

    def down_once(*args, **kwargs):
        calls.append("audit")
        assert get_alias_version(uri, "salesflow-forecaster", "champion") is None
        if calls.count("audit") == 1:
            raise WarehouseUnavailable("cannot reach the warehouse at sqlite:///x: refused")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(register, "log_and_register", lost_reply)
    monkeypatch.setattr(lifecycle, "write_frame", down_once)
    result = training_flow(env="test")
    assert calls == ["register", "audit", "audit"]
    assert (result["version"], result["action"]) == ("1", "promote")
    versions = client(uri).search_model_versions("name = 'salesflow-forecaster'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(get_alias_version(uri, "salesflow-forecaster", "champion").version) == "1"
    assert _audit(tmp_path)[["action", "to_version"]].values.tolist() == [["promote", "1"]]


def test_final_fit_runs_beside_the_backtest(harness, tmp_path, monkeypatch):
    """With model.concurrent_fits > 1 the train-model and evaluate-backtest task runs overlap."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.training import training_flow

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    state = training_flow(
        env="test", overrides={"model": {"concurrent_fits": 2}}, return_state=True
    )
    assert state.is_completed()

    async def task_runs():
        async with get_client() as client:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            return await client.read_task_runs(flow_run_filter=flt)

    runs = {r.name.rsplit("-", 1)[0]: r for r in asyncio.run(task_runs())}
    fit, bt = runs["train-model"], runs["evaluate-backtest"]
    assert fit.start_time < bt.end_time and bt.start_time < fit.end_time
    assert runs["set-intervals"].start_time >= max(fit.end_time, bt.end_time)
