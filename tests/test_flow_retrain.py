"""The retraining flow under prefect_test_harness: promote a better challenger, reject a
worse one, keep the audit trail; roll back on demand."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness

DATA = {"synthetic": {"n_stores": 4, "n_depts": 6, "periods": 143}}
# The flow's mechanics are under test here (the guardrails have their own table of tests in
# test_policy.py): on this small panel the model and seasonal naive are close, so the
# seasonal-naive guardrail is off and the margin is what decides.
GOOD = {
    "data": DATA,
    "model": {"horizon": 13, "n_estimators": 120},
    "backtest": {"n_origins": 1},
    "policy": {"must_beat_seasonal_naive": False},
}
# A badly overfitted model: the champion a bad training run would leave behind.
BAD = {
    **GOOD,
    "model": {"horizon": 13, "n_estimators": 40, "learning_rate": 1.0, "max_depth": 14},
}


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def local(harness, tmp_path, monkeypatch):
    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    return tmp_path


def _champion(tmp_path) -> str:
    from salesflow.registry import get_alias_version

    mv = get_alias_version(f"sqlite:///{tmp_path}/mlflow.db", "salesflow-forecaster", "champion")
    return str(mv.version) if mv else None


def test_better_challenger_is_promoted_and_previous_kept(local):
    """A weak champion is replaced; the old one keeps the 'previous' alias; audited."""
    from flows.retrain import retrain_flow
    from flows.training import training_flow
    from salesflow.lifecycle import read_audit
    from salesflow.registry import get_alias_version

    training_flow(env="test", overrides=BAD)
    assert _champion(local) == "1"
    out = retrain_flow(env="test", overrides=GOOD, reason="test")
    assert out["action"] == "promote", out["reason"]
    assert _champion(local) == out["challenger_version"] == "2"
    prev = get_alias_version(f"sqlite:///{local}/mlflow.db", "salesflow-forecaster", "previous")
    assert str(prev.version) == "1"
    audit = read_audit(f"sqlite:///{local}/warehouse.db", "model_audit")
    assert audit["action"].tolist() == ["promote", "promote"]
    assert audit["to_version"].tolist() == ["1", "2"]


def test_worse_challenger_is_never_promoted(local):
    """A weak challenger is rejected with the reason tagged; the champion stays."""
    from flows.retrain import retrain_flow
    from flows.training import training_flow
    from salesflow.registry import client

    training_flow(env="test", overrides=GOOD)
    out = retrain_flow(env="test", overrides=BAD)
    assert out["action"] == "reject"
    assert _champion(local) == "1"
    mv = client(f"sqlite:///{local}/mlflow.db").get_model_version("salesflow-forecaster", "2")
    assert mv.tags["salesflow.status"] == "rejected"
    assert mv.tags["salesflow.reject_reason"] == out["reason"]


def test_cli_rollback_restores_exactly_the_previous_version(local):
    """After a promotion, `salesflow rollback` points the champion back at the old version."""
    from flows.retrain import retrain_flow
    from flows.training import training_flow
    from salesflow.cli import main

    training_flow(env="test", overrides=BAD)
    retrain_flow(env="test", overrides=GOOD)
    assert _champion(local) == "2"
    assert main(["rollback", "--env", "test", "--reason", "bad week"]) == 0
    assert _champion(local) == "1"
