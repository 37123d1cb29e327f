"""The retraining flow: a challenger is trained and promoted only when it is better.

Triggered monthly and by the monitor's drift / degradation events (deployments/prefect.yaml).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from salesflow.settings import load_settings, settings_overrides
from tasks.features import build_features
from tasks.ingest import ingest_sales
from tasks.register import register_model
from tasks.retrain import apply_decision, decide_promotion, load_current_champion, make_holdout
from tasks.train import evaluate_backtest, prepare_model, train_model
from tasks.validate import validate_data


@flow(name="retrain-forecaster", log_prints=True)
def retrain_flow(
    env: str | None = None,
    source: str | None = None,
    path: str | None = None,
    as_of: str | None = None,
    reason: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a challenger on data before a recent holdout, compare it with the champion on
    that holdout, then promote it or tag it rejected. ``reason`` says what triggered it."""
    settings = load_settings(env, **settings_overrides(source, path, as_of, overrides))
    if reason:
        print(f"Retraining because: {reason}")
    data = ingest_sales(settings.data)
    data = validate_data(data, settings.validation, settings.data.as_of)
    holdout = make_holdout(data, settings)
    champion, champion_version = load_current_champion(settings)
    model = prepare_model(settings)
    rows = build_features(holdout.train, model)
    model = train_model(holdout.train, rows, model)
    bt = evaluate_backtest(holdout.train, model, settings)
    reg = register_model(model, holdout.train, bt, settings, alias_if_missing=False)
    decision = decide_promotion(
        model, reg.version, champion, champion_version, data, holdout, settings
    )
    moved = apply_decision(decision, reg, settings)
    return {
        "model_name": reg.name,
        "challenger_version": reg.version,
        "champion_version": champion_version,
        "action": decision.action,
        "reason": decision.reason,
        **moved,
    }


if __name__ == "__main__":
    retrain_flow()
