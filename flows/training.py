"""The training flow: ingest -> validate -> build features -> train -> evaluate -> register."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from salesflow.report import training_summary
from salesflow.settings import load_settings, settings_overrides
from tasks.features import build_features
from tasks.ingest import ingest_sales
from tasks.register import register_model
from tasks.train import evaluate_backtest, prepare_model, train_model
from tasks.validate import validate_data


@flow(name="train-forecaster", log_prints=True)
def training_flow(
    env: str | None = None,
    source: str | None = None,
    path: str | None = None,
    as_of: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the global forecaster on the configured data and register it in MLflow.

    ``source``/``path``/``as_of`` override ``data.*``; ``overrides`` is a nested dict of
    any other settings (e.g. ``{"model": {"horizon": 13}}``).
    """
    settings = load_settings(env, **settings_overrides(source, path, as_of, overrides))
    data = ingest_sales(settings.data)
    data = validate_data(data, settings.validation, settings.data.as_of)
    model = prepare_model(settings)
    rows = build_features(data, model)
    model = train_model(data, rows, model)
    bt = evaluate_backtest(data, model, settings)
    reg = register_model(model, data, bt, settings)
    overall = bt.overall()
    origins = bt.origins
    create_markdown_artifact(
        key="training-summary",
        markdown=training_summary(
            data, overall, origins, reg.name, reg.version, reg.alias, reg.run_id, reg.tracking_uri
        ),
        description="Data, backtest metrics vs baselines, registered version",
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
        "origins": origins,
        "metrics": {m: overall.loc[m].to_dict() for m in overall.index},
    }


if __name__ == "__main__":
    training_flow()
