"""Feature step: the leak-free training rows of the final model."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from salesflow.data.schema import SalesData
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.report import feature_table


@task(name="build-features", cache_policy=NO_CACHE)
def build_features(data: SalesData, model: GlobalForecaster) -> pd.DataFrame:
    """Training rows (series x origin x horizon) with their features and target."""
    rows = model.training_rows(data)
    get_run_logger().info(
        "Built %d features for %s training rows (%d origins)",
        len(model.feature_names_),
        f"{len(rows):,}",
        rows["origin"].nunique(),
    )
    create_table_artifact(
        key="training-features",
        table=feature_table(rows, model.dynamic_features_),
        description="Training features: share missing, mean, std",
    )
    return rows
