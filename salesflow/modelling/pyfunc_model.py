"""The forecaster's MLflow model code ("models from code"): MLflow runs this file when
``mlflow.pyfunc.load_model`` loads a champion logged by
:func:`salesflow.modelling.registry.log_and_register`. Do not import it: it registers its
model with ``mlflow.models.set_model`` when run.

``load_context`` reads the artifact folder with :func:`salesflow.modelling.artifact.
load_forecaster` (JSON, parquet and XGBoost's UBJSON; nothing is unpickled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from salesflow.data.schema import SalesData
from salesflow.modelling.artifact import load_forecaster


def predict_input(forecaster: Any, model_input: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc contract: ``model_input`` holds history rows (``y`` set) and future
    covariate rows (``y`` empty) in the columns the forecaster was trained on; out: the
    forecaster's predictions (unique_id, keys, origin, ds, horizon, forecast, bounds)."""
    has_y = model_input["y"].notna()
    data = SalesData(
        model_input[has_y].reset_index(drop=True),
        model_input[~has_y].drop(columns=["y"]).reset_index(drop=True),
        forecaster.keys_,
        forecaster.covariates_,
        forecaster.static_cols_,
        forecaster.freq_,
        "pyfunc",
    )
    return forecaster.predict(data)


class ForecasterModel(PythonModel):
    """A GlobalForecaster read from the artifact ``forecaster`` (a folder)."""

    def load_context(self, context: Any) -> None:
        self.forecaster = load_forecaster(Path(context.artifacts["forecaster"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return predict_input(self.forecaster, model_input)


mlflow.models.set_model(ForecasterModel())
