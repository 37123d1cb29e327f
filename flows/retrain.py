"""The retraining flow: a challenger is trained and promoted only when it is better.

Scheduled monthly and triggered by the monitor's drift / degradation events
(deployments/prefect.yaml): the one scheduled path by which a new model becomes champion.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.ingest_partitions import ingest_validated
from flows.run_names import run_name
from salesflow.config.settings import Settings, load_settings, settings_overrides
from tasks.features import build_features
from tasks.locks import acquire_model_lock, release_model_lock
from tasks.preflight import check_data, check_run
from tasks.register import register_model
from tasks.retrain import (
    apply_decision,
    decide_promotion,
    load_current_champion,
    make_holdout,
    refit_challenger,
)
from tasks.train import fit_and_backtest, open_fitter, prepare_model


@flow(name="retrain-forecaster", flow_run_name=run_name("retrain-forecaster"), log_prints=True)
def retrain_flow(
    env: str | None = None,
    source: str | None = None,
    path: str | None = None,
    as_of: str | None = None,
    reason: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a challenger on data before a recent holdout, compare it with the champion on
    that holdout; if the policy promotes it, refit the same configuration on all the data
    and make that refit the champion, else tag the challenger rejected. One retrain per
    model at a time (a lock in the warehouse). ``reason`` says what triggered it."""
    settings = load_settings(env, **settings_overrides(source, path, as_of, overrides))
    check_run(settings, "retrain")
    if reason:
        print(f"Retraining because: {reason}")
    lease = acquire_model_lock(settings)
    try:
        return _retrain(settings)
    finally:
        release_model_lock(lease)


def _retrain(settings: Settings) -> dict[str, Any]:
    data = ingest_validated(settings, settings.model.horizon)  # engine dask: on the workers
    champion, champion_version = load_current_champion(settings)
    check_data(settings, data, "retrain", champion, champion_version)
    holdout = make_holdout(data, settings)
    with open_fitter(settings) as fitter:  # engine dask: one cluster for the run
        model = prepare_model(settings)
        rows = None if fitter else build_features(holdout.train, model)
        model, bt = fit_and_backtest(holdout.train, rows, model, settings, fitter)
        reg = register_model(model, holdout.train, bt, settings, step="challenger")
        decision = decide_promotion(
            model, reg.version, champion, champion_version, data, holdout, settings, fitter
        )
        refit = None
        if decision.promote:
            final = refit_challenger(data, model, bt, fitter)
            tags = {"salesflow.evaluated_version": reg.version}
            refit = register_model(final, data, bt, settings, step="refit", extra_tags=tags)
    done = apply_decision(decision, reg, settings, champion_version, refit)
    return {
        "model_name": reg.name,
        "challenger_version": reg.version,
        "refit_version": None if refit is None else refit.version,
        "champion_version": champion_version,
        **done,
    }


if __name__ == "__main__":
    retrain_flow()
