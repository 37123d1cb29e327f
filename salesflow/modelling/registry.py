"""The MLflow side: log a trained forecaster, register it, manage aliases, load it back.

The forecaster is logged as a pyfunc model wrapping the joblib-pickled
:class:`~salesflow.model.GlobalForecaster`, so ``mlflow.pyfunc.load_model`` works too.
Nothing is configured at import time; every function takes the tracking URI.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from salesflow.data.schema import SalesData
from salesflow.errors import UserError
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.report import version_description

# The model's code travels with it (code_paths), so serving it elsewhere needs only these.
PIP_REQUIREMENTS = ["xgboost==3.2.0", "pandas==2.3.3", "numpy==2.4.6", "joblib", "mlflow==3.17.2"]
_CODE_PATHS = [
    str(Path(__file__).resolve().parents[1]),  # the salesflow package
    str(Path(__file__).resolve().parents[2] / "features"),
]


class ChampionNotFound(UserError, LookupError):
    """No model version carries the requested alias yet."""


class ChampionIncompatible(UserError):
    """The champion was trained on data of another shape (keys, frequency, covariates)."""


class ChampionUnreadable(RuntimeError):
    """The version holding the alias exists, but its model artifact cannot be loaded."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    alias: str | None
    tracking_uri: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _mlflow(tracking_uri: str):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow


def client(tracking_uri: str):
    """An MlflowClient bound to ``tracking_uri`` for both tracking and registry."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> str:
    """The experiment's id, creating it (with ``artifact_location``) if missing."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if artifact_location and artifact_location.startswith("file:"):
        Path(artifact_location.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    return c.create_experiment(name, artifact_location=artifact_location)


def data_fingerprint(data: SalesData) -> str:
    """sha256 over (unique_id, ds, y) of the history: the same data gives the same print."""
    h = pd.util.hash_pandas_object(data.history[["unique_id", "ds", "y"]], index=False)
    return hashlib.sha256(h.to_numpy().tobytes()).hexdigest()[:16]


def code_version() -> str:
    """The git commit (with ``-dirty`` if the tree has changes), else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"salesflow-{version('salesflow')}"


def _pyfunc():
    import mlflow.pyfunc

    class _Model(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.forecaster = joblib.load(context.artifacts["forecaster"])

        def predict(self, context, model_input: pd.DataFrame, params=None):
            """Input: history rows (y set) and future covariate rows (y empty)."""
            f = self.forecaster
            has_y = model_input["y"].notna()
            data = SalesData(
                model_input[has_y].reset_index(drop=True),
                model_input[~has_y].drop(columns=["y"]).reset_index(drop=True),
                f.keys_,
                f.covariates_,
                f.static_cols_,
                f.freq_,
                "pyfunc",
            )
            return f.predict(data)

    return _Model()


def log_and_register(
    model: GlobalForecaster,
    *,
    tracking_uri: str,
    experiment: str,
    artifact_location: str | None,
    model_name: str,
    alias: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    figures: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    input_example: pd.DataFrame,
    set_alias_if_missing: bool = True,
) -> RegisteredVersion:
    """Log one MLflow run (params, metrics, tags, figures, tables, the model), register
    the model, and give it ``alias`` when no version has that alias yet."""
    mlflow = _mlflow(tracking_uri)
    from mlflow.models import infer_signature

    exp_id = ensure_experiment(tracking_uri, experiment, artifact_location)
    with mlflow.start_run(experiment_id=exp_id) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"plots/{name}.png")
        for name, table in tables.items():
            path = Path(tmp) / f"{name}.csv"
            table.to_csv(path, index=False)
            mlflow.log_artifact(str(path), "tables")
        pkl = Path(tmp) / "forecaster.joblib"
        joblib.dump(model, pkl)
        out_example = model.predict(_example_data(model, input_example)).head(5)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_pyfunc(),
            artifacts={"forecaster": str(pkl)},
            signature=infer_signature(_float_ints(input_example), _float_ints(out_example)),
            input_example=_float_ints(input_example.head(5)),
            pip_requirements=PIP_REQUIREMENTS,
            code_paths=_CODE_PATHS,
            registered_model_name=model_name,
        )
        version = str(info.registered_model_version)
    c = client(tracking_uri)
    for k, v in tags.items():
        c.set_model_version_tag(model_name, version, k, v)
    c.update_model_version(
        model_name, version, description=version_description(params, metrics, tags)
    )
    given = None
    if set_alias_if_missing and get_alias_version(tracking_uri, model_name, alias) is None:
        c.set_registered_model_alias(model_name, alias, version)
        given = alias
    return RegisteredVersion(model_name, version, run.info.run_id, given, tracking_uri)


def _float_ints(frame: pd.DataFrame) -> pd.DataFrame:
    """Integer columns as float, so the signature accepts data with missing values."""
    ints = frame.select_dtypes("integer").columns
    return frame.astype(dict.fromkeys(ints, "float64"))


def _example_data(model: GlobalForecaster, frame: pd.DataFrame) -> SalesData:
    return SalesData(
        frame.reset_index(drop=True),
        frame.iloc[:0].drop(columns=["y"]),
        model.keys_,
        model.covariates_,
        model.static_cols_,
        model.freq_,
        "example",
    )


def get_alias_version(tracking_uri: str, model_name: str, alias: str):
    """The ModelVersion holding ``alias``, or None (also when the model does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def load_forecaster(tracking_uri: str, model_name: str, alias: str) -> tuple[GlobalForecaster, Any]:
    """The forecaster behind ``models:/<name>@<alias>`` and its ModelVersion.

    Raises :class:`ChampionNotFound` when no version has the alias.
    """
    mv = get_alias_version(tracking_uri, model_name, alias)
    if mv is None:
        raise ChampionNotFound(
            f"no version of model {model_name!r} has the alias {alias!r} in {tracking_uri}: "
            "run the training flow first (salesflow train)"
        )
    mlflow = _mlflow(tracking_uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")
        return pyfunc.unwrap_python_model().forecaster, mv
    except Exception as exc:
        raise ChampionUnreadable(
            f"version {mv.version} of {model_name!r} (alias {alias!r}, MLflow run {mv.run_id}) "
            f"could not be loaded from {mv.source}: {type(exc).__name__}: {exc}. Re-register "
            "a model (salesflow train) or point the alias at another version "
            "(salesflow rollback --to VERSION)"
        ) from exc


def champion_mismatch(model: GlobalForecaster, data: SalesData) -> list[str]:
    """What differs between the data ``model`` was trained on and ``data`` (empty: fits).

    Keys and frequency must be the same; the model's covariates and static columns must
    be in ``data`` (extra columns in ``data`` are ignored)."""
    out = []
    if list(model.keys_) != list(data.keys):
        out.append(f"series keys: expected {list(model.keys_)}, found {list(data.keys)}")
    if model.freq_ != data.freq:
        out.append(f"frequency: expected {model.freq_}, found {data.freq}")
    for what, wanted, have in (
        ("covariates", model.covariates_, data.covariates),
        ("static columns", model.static_cols_, data.static),
    ):
        missing = [c for c in wanted if c not in have]
        if missing:
            out.append(f"{what}: expected {list(wanted)}, found {list(have)} (missing {missing})")
    return out


def check_champion_fits(model: GlobalForecaster, data: SalesData, version: str) -> None:
    """Raise :class:`ChampionIncompatible` saying what differs, before any prediction."""
    problems = champion_mismatch(model, data)
    if problems:
        raise ChampionIncompatible(
            f"the champion (version {version}) does not fit the {data.source} data: "
            + "; ".join(problems)
            + ". Use the settings it was trained with (data.freq, data.long.*), or train a "
            "model on this data (salesflow train) and make it champion"
        )
