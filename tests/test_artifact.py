"""The no-pickle model artifact: every attribute round-trips, loading a champion never
unpickles, legacy pickled champions still load (with a warning), pyfunc still predicts."""

from __future__ import annotations

import inspect
import logging
import math
import pickle
from dataclasses import replace
from pathlib import Path

import cloudpickle
import joblib
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from salesflow.modelling import artifact, registry
from salesflow.modelling.artifact import ArtifactError, load_forecaster, save_forecaster
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.training import example_input, make_forecaster
from tests.test_features_daily import _daily, _model

MODEL = "salesflow-forecaster"


def _with_intervals(model: GlobalForecaster, data) -> GlobalForecaster:
    """Residual quantiles and reference forecasts from a stand-in backtest at an earlier
    origin (actuals: the forecast x 1.1), as the training flow sets them."""
    step = 4 * model.horizon
    origin = data.history["ds"].sort_values().unique()[-step]
    bt = model.predict(data, origin=origin)
    return model.set_intervals(bt.assign(y=bt["forecast"] * 1.1 + 1.0))


@pytest.fixture(scope="module")
def weekly(small_data, small_settings):
    """A fitted weekly forecaster with intervals, and its data."""
    return _with_intervals(make_forecaster(small_settings).fit(small_data), small_data), small_data


@pytest.fixture(scope="module")
def daily():
    """A fitted daily forecaster with an open column, a categorical covariate ("a"/"0"),
    native categorical splits and intervals, and its data (with 14 future days)."""
    data = _daily(n_stores=3, days=420, future=14)
    return _with_intervals(_model().fit(data), data), data


def _same(a, b) -> bool:
    """Deep equality that also asks for the same types (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, pd.DataFrame | pd.Series):
        try:
            assert_equal = pd.testing.assert_frame_equal
            if isinstance(a, pd.Series):
                assert_equal = pd.testing.assert_series_equal  # type: ignore[assignment]
            assert_equal(a, b, check_exact=True)
            return True
        except AssertionError:
            return False
    if isinstance(a, xgb.XGBModel):
        raw = a.get_booster().save_raw("ubj") == b.get_booster().save_raw("ubj")
        return raw and _same(a.get_params(), b.get_params())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@pytest.mark.parametrize("which", ["weekly", "daily"])
def test_every_attribute_of_a_fitted_model_round_trips(which, request, tmp_path):
    """Every attribute (settings and learned state) comes back equal and of its type, and
    the loaded model's forecasts equal the original's exactly."""
    model, data = request.getfixturevalue(which)
    loaded = load_forecaster(save_forecaster(model, tmp_path / "f"))
    assert set(vars(loaded)) == set(vars(model))
    differ = [k for k in vars(model) if not _same(getattr(model, k), getattr(loaded, k))]
    assert differ == []
    pd.testing.assert_frame_equal(loaded.predict(data), model.predict(data), check_exact=True)


def test_daily_model_keeps_its_categories_and_open_column(daily, tmp_path):
    """The daily case holds what the weekly one lacks: a categorical covariate's categories,
    the open column in the spec, native categorical feature types, closed days at 0."""
    model, data = daily
    loaded = load_forecaster(save_forecaster(model, tmp_path / "f"))
    assert loaded.spec.open_column == "open" and loaded.spec.categorical == ("state_holiday",)
    assert loaded.spec.holidays == model.spec.holidays and loaded.spec.holidays.country == "DE"
    assert loaded.cov_categories_ == {"state_holiday": ["0", "a"]}
    assert "c" in loaded.model_.get_booster().feature_types
    pred = loaded.predict(data)
    assert pred["closed"].any() and (pred.loc[pred["closed"], "forecast"] == 0).all()


def test_the_artifact_is_json_ubjson_and_parquet(weekly, tmp_path):
    """The folder holds only the JSON spec, the booster in UBJSON and parquet frames;
    Timestamps in the spec are tagged, not text."""
    model, _ = weekly
    out = save_forecaster(model, tmp_path / "f")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "forecaster.json",
        "frames/reference_forecasts.parquet",
        "frames/residual_quantiles.parquet",
        "model.ubj",
    ]
    text = (out / "forecaster.json").read_text()
    assert '"__timestamp__"' in text and '"__dataclass__": "features.build:FeatureSpec"' in text


def _patched_init(monkeypatch, name: str, default: int) -> None:
    """GlobalForecaster.__init__ with one more keyword setting, as another engineer may add."""
    original = GlobalForecaster.__init__
    sig = inspect.signature(original)

    def init(self, *args, **kwargs):
        value = kwargs.pop(name, default)
        original(self, *args, **kwargs)
        setattr(self, name, value)

    extra = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
    init.__signature__ = sig.replace(parameters=[*sig.parameters.values(), extra])  # type: ignore[attr-defined]
    monkeypatch.setattr(GlobalForecaster, "__init__", init)


def test_a_new_constructor_setting_round_trips_unannounced(weekly, tmp_path, monkeypatch):
    """A setting added to __init__ is saved and restored with no change to the artifact
    code; a model saved before it existed loads with its default; a model saved with it
    is refused, naming it, by code that does not know it."""
    model, _ = weekly
    before = save_forecaster(model, tmp_path / "before")
    with monkeypatch.context() as mp:
        _patched_init(mp, "shelf_life", 0)
        newer = model.clone()
        for k, v in vars(model).items():
            setattr(newer, k, v)
        newer.shelf_life = 9
        after = save_forecaster(newer, tmp_path / "after")
        assert load_forecaster(after).shelf_life == 9
        assert load_forecaster(before).shelf_life == 0
    with pytest.raises(ArtifactError, match=r"settings \['shelf_life'\].*newer salesflow"):
        load_forecaster(after)


@pytest.mark.parametrize(
    "attr, value, message",
    [
        ("cache_", object(), r"cache_: a builtins.object cannot be saved without pickle"),
        ("lookup_", {"a": {1, 2}}, r"lookup_\['a'\]: a builtins.set cannot be saved"),
        ("note", "x", r"attributes \['note'\] .* neither settings .* nor learned state"),
    ],
)
def test_an_unsupported_attribute_fails_at_save_naming_it(weekly, tmp_path, attr, value, message):
    """An attribute of a type the format cannot hold, or one that is neither a setting nor
    learned state, is refused when saving (not discovered when a worker loads it)."""
    model, _ = weekly
    odd = model.clone()
    for k, v in vars(model).items():
        setattr(odd, k, v)
    setattr(odd, attr, value)
    with pytest.raises(ArtifactError, match=message):
        save_forecaster(odd, tmp_path / "f")


def test_values_json_lacks_come_back_with_their_types(tmp_path):
    """Tuples, non-text dict keys, NaN, numpy scalars and arrays, Series, tz-aware
    Timestamps and nested dataclasses keep their types through the spec."""
    from features.build import FeatureSpec
    from features.holidays import HolidaySpec

    values = {
        "t": (1, "a", (2.5,)),
        "keys": {1: "x", "__y": [np.float32(0.5)]},
        "nan": float("nan"),
        "i": np.int64(3),
        "arr": np.arange(6, dtype="int32").reshape(2, 3),
        "s": pd.Series([1.5, 2.0], index=[3, 4], name="q"),
        "ts": pd.Timestamp("2012-10-26 12:00", tz="Europe/Berlin"),
        "spec": FeatureSpec(holidays=HolidaySpec("none", "DE", "BY")),
    }
    enc = artifact._Encoder(tmp_path)
    back = artifact._Decoder(tmp_path).value(enc.value(values, "values"))
    for k, v in values.items():
        if isinstance(v, np.ndarray):
            assert back[k].dtype == v.dtype and (back[k] == v).all()
        else:
            assert _same(back[k], v), k
    assert str(back["ts"].tz) == "Europe/Berlin"


def test_a_spec_naming_a_foreign_class_is_refused(tmp_path):
    """The spec cannot make the loader import or build anything outside the allow-list."""
    dec = artifact._Decoder(tmp_path)
    with pytest.raises(ArtifactError, match="not one of salesflow's"):
        dec.value({"__dataclass__": "os:system", "fields": {}})
    with pytest.raises(ArtifactError, match="not an XGBoost model class"):
        dec.value({"__xgboost__": "x.ubj", "class": "DMatrix"})
    with pytest.raises(ArtifactError, match="outside the artifact folder"):
        dec.value({"__frame__": "../elsewhere.parquet"})


# ---- through a real MLflow registry ----------------------------------------------------
def _register(settings, model, data) -> str:
    reg = registry.log_and_register(
        model,
        tracking_uri=settings.tracking_uri,
        experiment=settings.mlflow.experiment,
        artifact_location=settings.artifact_location,
        model_name=MODEL,
        alias="champion",
        params={"horizon": model.horizon},
        metrics={},
        tags={},
        figures={},
        tables={},
        input_example=example_input(data),
    )
    return reg.version


def _log_legacy(settings, model, data, tmp: Path) -> str:
    """The logging of salesflow before the no-pickle format, kept only here: a cloudpickled
    pyfunc whose load_context joblib-loads the forecaster."""
    import mlflow
    from mlflow.models import infer_signature

    from salesflow.data.schema import SalesData

    class _Model(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.forecaster = joblib.load(context.artifacts["forecaster"])

        def predict(self, context, model_input: pd.DataFrame, params=None):
            f = self.forecaster
            has_y = model_input["y"].notna()
            d = SalesData(
                model_input[has_y].reset_index(drop=True),
                model_input[~has_y].drop(columns=["y"]).reset_index(drop=True),
                f.keys_,
                f.covariates_,
                f.static_cols_,
                f.freq_,
                "pyfunc",
            )
            return f.predict(d)

    uri = settings.tracking_uri
    mlflow = registry._mlflow(uri)
    exp = registry.ensure_experiment(uri, settings.mlflow.experiment, settings.artifact_location)
    pkl = tmp / "forecaster.joblib"
    joblib.dump(model, pkl)
    example = registry._float_ints(example_input(data).head(5))
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_Model(),
            artifacts={"forecaster": str(pkl)},
            signature=infer_signature(example),
            input_example=example,
            registered_model_name=MODEL,
        )
    version = str(info.registered_model_version)
    registry.client(uri).set_registered_model_alias(MODEL, "champion", version)
    return version


class _Records(logging.Handler):
    """MLflow's loggers do not propagate to the root logger (caplog): listen on them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)


@pytest.fixture()
def mlflow_logs():
    import mlflow  # noqa: F401  (its import configures its loggers, dropping our handler)

    handler, logger = _Records(), logging.getLogger("mlflow")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _refuse(*a, **k):
    raise AssertionError("unpickling while loading a champion")


def _no_unpickling(mp: pytest.MonkeyPatch) -> None:
    for target in (pickle, cloudpickle):
        mp.setattr(target, "load", _refuse)
        mp.setattr(target, "loads", _refuse)
    mp.setattr(joblib, "load", _refuse)


def test_champion_loads_without_unpickling(isolated_settings, weekly, mlflow_logs, recwarn):
    """Logging says nothing about pickle; load_forecaster (workers, API, dashboard) and
    mlflow.pyfunc.load_model read the champion with every unpickler made to fail (and
    MLflow's pickle switch off), and their forecasts equal the original model's exactly."""
    import mlflow

    model, data = weekly
    version = _register(isolated_settings, model, data)
    said = mlflow_logs.text() + "\n".join(str(w.message) for w in recwarn)
    assert "pickle" not in said.lower()
    with pytest.MonkeyPatch.context() as mp:
        _no_unpickling(mp)
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        loaded, mv = registry.load_forecaster(isolated_settings.tracking_uri, MODEL, "champion")
        pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    assert str(mv.version) == version
    want = model.predict(data)
    pd.testing.assert_frame_equal(loaded.predict(data), want, check_exact=True)
    frame = registry._float_ints(pd.concat([data.history, data.future], ignore_index=True))
    got = pyfunc.predict(frame)
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False)
    assert "legacy" not in mlflow_logs.text()


def test_legacy_pickled_champion_loads_with_a_warning(
    isolated_settings, weekly, tmp_path, mlflow_logs, caplog
):
    """A champion registered in the old pickled format still loads and forecasts the same,
    and the load logs a WARNING saying it is a legacy pickled artifact to retrain/retire
    (MLflow itself warned about cloudpickle when it was logged); with
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false it is refused as unreadable."""
    model, data = weekly
    version = _log_legacy(isolated_settings, model, data, tmp_path)
    assert "CloudPickle" in mlflow_logs.text()
    with caplog.at_level(logging.WARNING, logger="salesflow.modelling.registry"):
        loaded, mv = registry.load_forecaster(isolated_settings.tracking_uri, MODEL, "champion")
    assert str(mv.version) == version
    (warning,) = [r for r in caplog.records if r.name == "salesflow.modelling.registry"]
    assert warning.levelno == logging.WARNING
    assert "legacy pickled artifact" in warning.getMessage()
    assert "Retrain" in warning.getMessage() and "retire" in warning.getMessage()
    pd.testing.assert_frame_equal(loaded.predict(data), model.predict(data), check_exact=True)
    with pytest.MonkeyPatch.context() as mp:  # the unpicklers the other test blocks are these
        _no_unpickling(mp)
        with pytest.raises(registry.ChampionUnreadable, match="unpickling"):
            registry.load_forecaster(isolated_settings.tracking_uri, MODEL, "champion")
    with pytest.MonkeyPatch.context() as mp:  # how an operator refuses legacy champions
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        with pytest.raises(registry.ChampionUnreadable, match="pickle is disallowed"):
            registry.load_forecaster(isolated_settings.tracking_uri, MODEL, "champion")


def test_a_broken_artifact_is_unreadable_not_unpickled(isolated_settings, weekly, monkeypatch):
    """A new-format champion whose spec is corrupt raises ChampionUnreadable naming the
    version and the fix; nothing falls back to a pickle."""
    model, data = weekly
    _register(isolated_settings, model, data)

    def corrupt(directory, cls=GlobalForecaster):
        raise ArtifactError("forecaster.json is not a salesflow-forecaster spec")

    monkeypatch.setattr(artifact, "load_forecaster", corrupt)
    _no_unpickling(monkeypatch)
    with pytest.raises(registry.ChampionUnreadable, match=r"version 1 .*salesflow rollback"):
        registry.load_forecaster(isolated_settings.tracking_uri, MODEL, "champion")


def test_an_unfitted_model_is_not_saved(small_settings, tmp_path):
    """Saving an unfitted forecaster says to fit it first."""
    with pytest.raises(ValueError, match="not fitted yet"):
        save_forecaster(make_forecaster(small_settings), tmp_path / "f")


def test_dataclasses_are_rebuilt_by_field_name():
    """A FeatureSpec field added later takes its default when an older spec lacks it; a
    field this code does not know is refused, naming it."""
    from features.build import FeatureSpec

    fields = artifact.rebuild_dataclass(FeatureSpec, {"season_length": 12})
    assert fields == replace(FeatureSpec(), season_length=12)
    with pytest.raises(ArtifactError, match=r"no fields \['later'\].*newer salesflow"):
        artifact.rebuild_dataclass(FeatureSpec, {"later": 1})
