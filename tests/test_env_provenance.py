"""Provenance: what a training run is tagged with is the env and model actually loaded, even
when $SALESFLOW_ENV names another env (issue #12: a scenario model tagged env: dev)."""

from __future__ import annotations

import pytest


@pytest.fixture()
def scenario_under_dev(monkeypatch):
    """The scenario's settings (a small model) loaded while $SALESFLOW_ENV says dev."""
    from salesflow.config.settings import load_settings

    monkeypatch.setenv("SALESFLOW_ENV", "dev")
    return load_settings("scenario", model={"n_estimators": 5})


def test_run_tags_carry_the_loaded_env_and_model(scenario_under_dev):
    """run_record's tags (MLflow run and version tags) name env scenario and its model."""
    from salesflow.data.synthetic import generate_sales
    from salesflow.modelling.training import evaluate, make_forecaster, run_record

    s = scenario_under_dev
    data = generate_sales(s.data.synthetic)
    model = make_forecaster(s).fit(data)
    tags = run_record(model, data, evaluate(data, s), s).tags
    assert (tags["env"], tags["model_name"]) == ("scenario", "salesflow-scenario")
