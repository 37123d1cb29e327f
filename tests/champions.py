"""A champion for tests that score: the test settings' forecaster fitted and registered."""

from __future__ import annotations

from typing import Any


def register_champion(settings: Any) -> Any:
    """Fit the forecaster of ``settings`` on its data and register it with the champion
    alias in its MLflow registry; the registered version."""
    from salesflow.data.sources import load_sales
    from salesflow.modelling.registry import log_and_register
    from salesflow.modelling.training import example_input, make_forecaster

    settings.local_dir.mkdir(parents=True, exist_ok=True)
    data = load_sales(settings.data)
    return log_and_register(
        make_forecaster(settings).fit(data),
        tracking_uri=settings.tracking_uri,
        experiment=settings.mlflow.experiment,
        artifact_location=settings.artifact_location,
        model_name=settings.model.name,
        alias=settings.mlflow.champion_alias,
        params={},
        metrics={},
        tags={},
        figures={},
        tables={},
        input_example=example_input(data),
    )
