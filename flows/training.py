"""The training flow: ingest -> validate -> build features -> train -> evaluate -> register
-> first-champion gate. Run by hand (``salesflow train``, deployment ``train-forecaster/manual``);
later champions come from the retraining flow's policy."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.ingest_partitions import ingest_validated
from flows.run_names import run_name
from salesflow.config.settings import Settings, load_settings, settings_overrides
from salesflow.modelling.report import training_summary
from tasks.features import build_features
from tasks.locks import acquire_model_lock, release_model_lock
from tasks.preflight import check_data, check_run
from tasks.register import gate_first_champion, register_model
from tasks.train import fit_and_backtest, open_fitter, prepare_model


@flow(name="train-forecaster", flow_run_name=run_name("train-forecaster"), log_prints=True)
def training_flow(
    env: str | None = None,
    source: str | None = None,
    path: str | None = None,
    as_of: str | None = None,
    overrides: dict[str, Any] | None = None,
    force_champion: bool = False,
    actor: str | None = None,
    force_reason: str | None = None,
) -> dict[str, Any]:
    """Train the global forecaster on the configured data and register it in MLflow.

    With no champion yet, the version becomes champion only if its own backtest passes
    the policy's guardrails (else it is tagged rejected: ``action`` "reject");
    ``force_champion`` makes it champion regardless, audited with ``actor`` and
    ``force_reason``. An existing champion is left alone (``action`` "none").
    ``source``/``path``/``as_of`` override ``data.*``; ``overrides`` is a nested dict of
    any other settings (e.g. ``{"model": {"horizon": 13}}``).
    """
    settings = load_settings(env, **settings_overrides(source, path, as_of, overrides))
    check_run(settings, "train")
    lease = acquire_model_lock(settings)
    try:
        return _train(settings, force_champion, actor or "training-flow", force_reason)
    finally:
        release_model_lock(lease)


def _train(settings: Settings, force: bool, actor: str, force_reason: str | None) -> dict[str, Any]:
    data = ingest_validated(settings, settings.model.horizon)  # engine dask: on the workers
    check_data(settings, data, "train")
    with open_fitter(settings) as fitter:  # engine dask: one cluster for the run
        model = prepare_model(settings)
        rows = None if fitter else build_features(data, model)  # on Dask: per shard, on workers
        model, bt = fit_and_backtest(data, rows, model, settings, fitter)
    reg = register_model(model, data, bt, settings, step="train")
    gate = gate_first_champion(reg, bt, settings, force, actor, force_reason)
    promoted = gate["action"] == "promote"
    reg = replace(reg, alias=settings.mlflow.champion_alias if promoted else None)
    overall = bt.overall()
    origins = bt.origins
    by_origin = bt.origin_rows()
    create_markdown_artifact(
        key="training-summary",
        markdown=training_summary(
            data,
            overall,
            origins,
            reg.name,
            reg.version,
            reg.alias,
            reg.run_id,
            reg.tracking_uri,
            by_origin,
        ),
        description="Data, backtest metrics vs baselines (pooled and per origin), version",
    )
    if reg.tracking_uri.startswith("http"):
        create_link_artifact(
            key="mlflow-run",
            link=f"{reg.tracking_uri}/#/experiments/0/runs/{reg.run_id}",
            description="MLflow run",
        )
    return {
        "model_name": reg.name,
        "version": reg.version,
        "run_id": reg.run_id,
        "alias": reg.alias,
        "action": gate["action"],
        "forced": gate["forced"],
        "reason": gate["reason"],
        "origins": origins,
        "metrics": {m: overall.loc[m].to_dict() for m in overall.index},
        "by_origin": by_origin,
    }


if __name__ == "__main__":
    training_flow()
