"""The MLflow side: log a trained forecaster, register it, manage aliases, load it back.

The forecaster is logged as an MLflow "models from code" pyfunc model: the code is
:mod:`salesflow.modelling.pyfunc_model`, the artifact ``forecaster`` is the folder of
:mod:`salesflow.modelling.artifact` (JSON spec, XGBoost UBJSON, parquet). Nothing in it is
pickled; :func:`load_forecaster` reads it with the package's own loader and never
unpickles. Versions logged before (a cloudpickled pyfunc wrapping a joblib pickle) still
load, with a warning to retire them. Nothing is configured at import time; every function
takes the tracking URI.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from salesflow.data.schema import SalesData
from salesflow.errors import TransientError, UserError, is_transient, redact, single_line
from salesflow.modelling import artifact
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.report import version_description

log = logging.getLogger(__name__)

# The model's code travels with it (code_paths), so serving it elsewhere needs only these.
PIP_REQUIREMENTS = [
    "xgboost==3.2.0",
    "pandas==2.3.3",
    "numpy==2.4.6",
    "pyarrow>=17",
    "mlflow==3.17.2",
]
MODEL_CODE = Path(__file__).resolve().with_name("pyfunc_model.py")
ARTIFACT_KEY = "forecaster"  # the pyfunc artifact holding the forecaster's folder
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


class RegistryUnavailable(TransientError):
    """The MLflow tracking server (registry) did not answer: transient, retried by the tasks."""


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


PrintParts = tuple[int, int, int]
"""(rows, sum of one 64-bit row hash, sum of another): :func:`print_parts`."""

_SECOND_KEY = "salesflow-print2"  # 16 characters: pandas' hash_key for the second hash


def print_parts(data: SalesData) -> PrintParts:
    """What :func:`data_fingerprint` is made of, for any part of the rows: the row count
    and two sums (mod 2**64) of independent 64-bit hashes of each (unique_id, ds, y). Sums
    do not depend on the rows' order, so parts held apart (shards of the panel on Dask
    workers) add up to the whole panel's (:func:`combine_prints`)."""
    rows = data.history[["unique_id", "ds", "y"]]
    one = pd.util.hash_pandas_object(rows, index=False).to_numpy()
    two = pd.util.hash_pandas_object(rows, index=False, hash_key=_SECOND_KEY).to_numpy()
    return len(rows), int(one.sum(dtype=np.uint64)), int(two.sum(dtype=np.uint64))


def combine_prints(parts: Sequence[PrintParts]) -> str:
    """The fingerprint of the union of disjoint parts (see :func:`print_parts`)."""
    mod = 2**64
    n = sum(p[0] for p in parts)
    one = sum(p[1] for p in parts) % mod
    two = sum(p[2] for p in parts) % mod
    return hashlib.sha256(f"{n}:{one:016x}:{two:016x}".encode()).hexdigest()[:16]


def data_fingerprint(data: SalesData) -> str:
    """A 16-hex print of the history's (unique_id, ds, y) rows, whatever their order: the
    same rows give the same print, on one machine or summed over Dask shards."""
    return combine_prints([print_parts(data)])


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
        folder = artifact.save_forecaster(model, Path(tmp) / ARTIFACT_KEY)
        out_example = model.predict(_example_data(model, input_example)).head(5)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={ARTIFACT_KEY: str(folder)},
            metadata={"salesflow_format": f"{artifact.FORMAT}/{artifact.FORMAT_VERSION}"},
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


_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


def get_alias_version(tracking_uri: str, model_name: str, alias: str):
    """The ModelVersion holding ``alias``, or None (also when the model does not exist).

    Raises :class:`RegistryUnavailable` when the registry cannot be reached (an MLflow
    server down or timing out): that is not "no champion", and it is worth a retry.
    """
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        # The registry answered "no such model / alias": no champion, even when the lookup
        # runs while another error is being handled (its __context__ must not make it
        # look transient: a failed alias move's compensation looks the champion up).
        if exc.error_code in _NOT_FOUND_CODES:
            return None
        if is_transient(exc):
            raise RegistryUnavailable(
                f"the MLflow tracking server at {redact(tracking_uri)} is unreachable (looking "
                f"up {model_name}@{alias}): {single_line(redact(exc))[:300]}. Check that it "
                "runs and that SALESFLOW_MLFLOW__TRACKING_URI points at it"
            ) from exc
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
        return _load_version(mlflow, model_name, mv), mv
    except Exception as exc:
        raise ChampionUnreadable(
            f"version {mv.version} of {model_name!r} (alias {alias!r}, MLflow run {mv.run_id}) "
            f"could not be loaded from {mv.source}: {type(exc).__name__}: {exc}. Re-register "
            "a model (salesflow train) or point the alias at another version "
            "(salesflow rollback --to VERSION)"
        ) from exc


def _load_version(mlflow: Any, model_name: str, mv: Any) -> GlobalForecaster:
    """The forecaster of version ``mv``: its MLmodel (YAML) says the format. The current
    one is read by :func:`artifact.load_forecaster` (no code from the registry is run, no
    pickle); a legacy pickled one through MLflow's pyfunc loader, with a warning."""
    uri = f"models:/{model_name}/{mv.version}"
    tmp = Path(tempfile.mkdtemp(prefix="salesflow-model-"))
    try:
        spec = Path(mlflow.artifacts.download_artifacts(f"{uri}/MLmodel", dst_path=str(tmp)))
        flavor = (yaml.safe_load(spec.read_text()) or {}).get("flavors", {})
        pyfunc = flavor.get("python_function", {})
        folder = pyfunc.get("artifacts", {}).get(ARTIFACT_KEY, {}).get("path")
        if "python_model" in pyfunc:  # cloudpickled: salesflow before the no-pickle format
            _warn_legacy(model_name, mv)
            return mlflow.pyfunc.load_model(uri).unwrap_python_model().forecaster
        if pyfunc.get("model_code_path") and folder:
            local = mlflow.artifacts.download_artifacts(f"{uri}/{folder}", dst_path=str(tmp))
            return artifact.load_forecaster(local)
        raise artifact.ArtifactError(
            f"{uri} is neither a salesflow forecaster ({artifact.FORMAT}) nor a legacy pickled one"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _warn_legacy(model_name: str, mv: Any) -> None:
    log.warning(
        "version %s of %r (MLflow run %s) is a legacy pickled artifact (cloudpickle + "
        "joblib): loading it unpickles, which can run any code that whoever wrote it to the "
        "registry put in it. Retrain (salesflow train) and promote a new version, then "
        "retire this one",
        mv.version,
        model_name,
        mv.run_id,
    )


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
