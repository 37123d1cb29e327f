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
    from salesflow.modelling.registry import get_alias_version

    mv = get_alias_version(f"sqlite:///{tmp_path}/mlflow.db", "salesflow-forecaster", "champion")
    return str(mv.version) if mv else None


def test_better_challenger_is_refit_on_all_data_and_promoted(local):
    """A weak champion is replaced by a refit of the better challenger on ALL the data
    (trained until the last data date, not the holdout's start); the old champion keeps
    'previous'; the audit row has the holdout scores, the evaluated version and the
    refit's MLflow run."""
    import json

    from flows.retrain import retrain_flow
    from flows.training import training_flow
    from salesflow.config.settings import load_settings
    from salesflow.data.sources import load_sales
    from salesflow.governance.lifecycle import read_audit
    from salesflow.modelling.registry import client, get_alias_version, load_forecaster

    uri = f"sqlite:///{local}/mlflow.db"
    training_flow(env="test", overrides=BAD, force_champion=True, force_reason="weak start")
    assert _champion(local) == "1"
    out = retrain_flow(env="test", overrides=GOOD, reason="test")
    assert out["action"] == "promote", out["reason"]
    assert (out["challenger_version"], out["refit_version"]) == ("2", "3")
    assert _champion(local) == out["to_version"] == "3"
    prev = get_alias_version(uri, "salesflow-forecaster", "previous")
    assert str(prev.version) == "1"

    last = load_sales(load_settings("test", **GOOD).data).last_date
    champ, _ = load_forecaster(uri, "salesflow-forecaster", "champion")
    challenger = client(uri).get_model_version("salesflow-forecaster", "2")
    assert champ.trained_until_ == last
    assert challenger.tags["trained_until"] < str(last.date())
    assert challenger.tags["salesflow.refit_version"] == "3"
    assert champ.residual_quantiles_ is not None  # intervals kept from the backtest

    audit = read_audit(f"sqlite:///{local}/warehouse.db", "model_audit")
    assert audit["action"].tolist() == ["promote", "promote"]
    assert audit["to_version"].tolist() == ["1", "3"]
    figures = json.loads(audit["metrics"].iloc[-1])
    refit_run = client(uri).get_model_version("salesflow-forecaster", "3").run_id
    assert figures["refit"] == {"version": "3", "run_id": refit_run}
    assert figures["evaluated"]["version"] == "2"
    assert figures["challenger"]["wmae"] < figures["champion"]["wmae"]


def test_worse_challenger_is_never_promoted(local):
    """A weak challenger is rejected with the reason tagged; the champion stays."""
    from flows.retrain import retrain_flow
    from flows.training import training_flow
    from salesflow.modelling.registry import client

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
    from salesflow.commands.cli import main

    training_flow(env="test", overrides=BAD, force_champion=True)
    retrain_flow(env="test", overrides=GOOD)
    assert _champion(local) == "3"
    assert main(["rollback", "--env", "test", "--reason", "bad week"]) == 0
    assert _champion(local) == "1"


def test_warehouse_down_at_promotion_moves_no_alias_until_the_audit_row_lands(local, monkeypatch):
    """The audit write failing once (warehouse unreachable) fails the attempt before the
    alias moves; the retried step promotes once: one row 'promote 1 -> 3', no duplicate."""
    from flows.retrain import retrain_flow
    from flows.training import training_flow
    from salesflow.governance import lifecycle
    from salesflow.governance.lifecycle import read_audit
    from salesflow.modelling.registry import client
    from salesflow.storage.sqlengine import WarehouseUnavailable

    training_flow(env="test", overrides=BAD, force_champion=True)
    real, seen = lifecycle.write_frame, []

    def down_once(url, frame, table, *args, **kwargs):
        seen.append(_champion(local))  # where the alias is when the audit row is written
        if len(seen) == 1:
            raise WarehouseUnavailable("cannot reach the warehouse at sqlite:///x: refused")
        return real(url, frame, table, *args, **kwargs)

    monkeypatch.setattr(lifecycle, "write_frame", down_once)
    out = retrain_flow(env="test", overrides=GOOD)
    assert out["action"] == "promote", out["reason"]
    assert seen == ["1", "1"]  # the alias had not moved at either write
    assert _champion(local) == "3"
    audit = read_audit(f"sqlite:///{local}/warehouse.db", "model_audit")
    assert audit[["from_version", "to_version"]].values.tolist() == [[None, "1"], ["1", "3"]]
    versions = client(f"sqlite:///{local}/mlflow.db").search_model_versions(
        "name = 'salesflow-forecaster'"
    )
    assert sorted(str(v.version) for v in versions) == ["1", "2", "3"]


def test_retrain_fails_fast_while_another_holds_the_lock(local):
    """A retrain (flow or `salesflow retrain`) while another run holds the model's lock
    fails at once with one line naming the holder; nothing is trained or registered."""
    from flows.retrain import retrain_flow
    from salesflow.modelling.registry import client
    from salesflow.storage.locks import LockHeld, model_lock

    url = f"sqlite:///{local}/warehouse.db"
    holder = "flow run 42, ann@box pid 7"
    with (
        model_lock(url, "salesflow-forecaster", holder, 600),
        pytest.raises(LockHeld, match="another retrain .* running: flow run 42, ann@box"),
    ):
        retrain_flow(env="test", overrides=GOOD)
    mlflow_uri = f"sqlite:///{local}/mlflow.db"
    assert client(mlflow_uri).search_model_versions("name = 'salesflow-forecaster'") == []
