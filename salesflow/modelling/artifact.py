"""A fitted forecaster as files that load without unpickling anything.

:func:`save_forecaster` writes a folder:

- ``forecaster.json``: the format tag, the class, the constructor settings and the learned
  state, as JSON;
- ``<attribute>.ubj``: each XGBoost model, in XGBoost's own UBJSON format;
- ``frames/<attribute>.parquet``: each DataFrame (dtypes and index kept).

Settings are the parameters of the class's ``__init__`` (read from its signature, so a
parameter added there travels without a change here); learned state is every attribute
ending in ``_`` (scikit-learn's convention). JSON has no tuples, timestamps, numpy scalars
or dataclasses: those are written as one-key objects (``{"__tuple__": [...]}``) and
rebuilt on load; dataclasses (the ``FeatureSpec`` and its ``HolidaySpec``) by
``dataclasses.asdict`` and their type hints. An attribute of any other type, or one that
is neither a setting nor learned state, fails at save time and names the attribute.

:func:`load_forecaster` reads the folder back with ``json``, ``pandas.read_parquet`` and
``XGBModel.load_model``: no pickle, no code named by the files is run (dataclasses and
XGBoost classes are looked up in an allow-list). No MLflow and no Prefect here.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import math
import re
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from salesflow.modelling.model import GlobalForecaster

FORMAT = "salesflow-forecaster"
FORMAT_VERSION = 1
SPEC_FILE = "forecaster.json"
# Packages whose dataclasses a spec file may name (the class is imported to rebuild it).
_DATACLASS_PACKAGES = ("features", "salesflow")
_NUMPY_KINDS = "biufU"


class ArtifactError(ValueError):
    """A forecaster cannot be written to, or read from, the no-pickle format."""


# ---- what is saved ---------------------------------------------------------------------
def setting_names(cls: type) -> list[str]:
    """The parameters of ``cls.__init__`` (without ``self``): the settings to save."""
    names = []
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ArtifactError(
                f"{cls.__qualname__}.__init__ takes *{p.name}: name every setting, so that "
                "it can be saved and restored by name"
            )
        names.append(p.name)
    return names


def split_attributes(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(settings, learned state)`` of ``model``; raises :class:`ArtifactError` for a
    setting without its attribute or an attribute that is neither."""
    attrs = dict(vars(model))
    settings = {}
    for name in setting_names(type(model)):
        if name not in attrs:
            raise ArtifactError(
                f"{type(model).__qualname__}.__init__ takes {name!r} but the model has no "
                f"attribute {name!r}: store each setting under its own name (scikit-learn's "
                "convention) so that it is saved"
            )
        settings[name] = attrs.pop(name)
    other = sorted(k for k in attrs if not k.endswith("_"))
    if other:
        raise ArtifactError(
            f"attributes {other} of the {type(model).__qualname__} are neither settings "
            "(parameters of __init__) nor learned state (names ending in '_'): they would "
            "be lost; rename them or make them settings"
        )
    return settings, attrs


# ---- save ------------------------------------------------------------------------------
def save_forecaster(model: GlobalForecaster, directory: str | Path) -> Path:
    """Write ``model`` (fitted) to ``directory`` (created) and return it."""
    model._check_fitted()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    settings, state = split_attributes(model)
    enc = _Encoder(out)
    doc = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "class": type(model).__qualname__,
        "settings": {k: enc.value(v, k) for k, v in settings.items()},
        "state": {k: enc.value(v, k) for k, v in sorted(state.items())},
    }
    text = json.dumps(doc, indent=1, allow_nan=False, ensure_ascii=False)
    (out / SPEC_FILE).write_text(text + "\n", encoding="utf-8")
    return out


class _Encoder:
    """JSON values for Python ones; DataFrames and XGBoost models become files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: set[str] = set()

    def value(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, int) and not isinstance(v, np.generic):
            return v
        if isinstance(v, float) and not isinstance(v, np.generic):
            return v if math.isfinite(v) else {"__float__": repr(v)}
        if isinstance(v, np.generic):
            return self._numpy(v, where)
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, tuple):
            return {"__tuple__": [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, dict):
            return self._dict(v, where)
        if isinstance(v, pd.Timestamp):
            tz = None if v.tz is None else str(v.tz)
            return {"__timestamp__": v.isoformat(), "unit": v.unit, "tz": tz}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._dataclass(v, where)
        if isinstance(v, pd.DataFrame):
            return {"__frame__": self._frame(v, where)}
        if isinstance(v, pd.Series):
            name = self.value(v.name, f"{where}.name")
            return {"__series__": self._frame(v.to_frame("values"), where), "name": name}
        if isinstance(v, np.ndarray) and v.dtype.kind in _NUMPY_KINDS:
            data = self.value(v.tolist(), where)
            return {"__ndarray__": data, "dtype": v.dtype.str, "shape": list(v.shape)}
        if isinstance(v, xgb.XGBModel | xgb.Booster):
            return self._xgboost(v, where)
        raise ArtifactError(
            f"{where}: a {type(v).__module__}.{type(v).__qualname__} cannot be saved without "
            "pickle. Supported: None, bool, int, float, str, list, tuple, dict, numpy scalars "
            "and arrays of numbers or text, pandas Timestamp, Series and DataFrame, "
            "dataclasses of salesflow/features, XGBoost models. Store it as one of those, or "
            "teach salesflow.modelling.artifact the type"
        )

    def _numpy(self, v: np.generic, where: str) -> Any:
        if v.dtype.kind not in _NUMPY_KINDS:
            raise ArtifactError(f"{where}: numpy {v.dtype} scalars are not supported")
        return {"__numpy__": self.value(v.item(), where), "dtype": v.dtype.str}

    def _dict(self, v: dict, where: str) -> Any:
        if all(isinstance(k, str) and not k.startswith("__") for k in v):
            return {k: self.value(x, f"{where}[{k!r}]") for k, x in v.items()}
        pairs = [[self.value(k, where), self.value(x, f"{where}[{k!r}]")] for k, x in v.items()]
        return {"__dict__": pairs}

    def _dataclass(self, v: Any, where: str) -> dict[str, Any]:
        cls = type(v)
        name = f"{cls.__module__}:{cls.__qualname__}"
        _allowed_dataclass(name)
        fields = dataclasses.asdict(v)
        if rebuild_dataclass(cls, fields) != v:
            raise ArtifactError(
                f"{where}: the {cls.__qualname__} is not rebuilt equal from its fields "
                "(dataclasses.asdict); give its nested fields dataclass or plain types"
            )
        return {"__dataclass__": name, "fields": self.value(fields, where)}

    def _file(self, where: str, suffix: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", where).strip("_") or "value"
        name, i = f"{stem}{suffix}", 1
        while name in self.files:
            name, i = f"{stem}.{i}{suffix}", i + 1
        self.files.add(name)
        return name

    def _frame(self, v: pd.DataFrame, where: str) -> str:
        bad = [c for c in v.columns if not isinstance(c, str)]
        if bad:
            raise ArtifactError(f"{where}: DataFrame column names must be text, found {bad}")
        rel = "frames/" + self._file(where, ".parquet")
        path = self.root / rel
        path.parent.mkdir(exist_ok=True)
        v.to_parquet(path)
        try:
            pd.testing.assert_frame_equal(pd.read_parquet(path), v, check_exact=True)
        except AssertionError as exc:
            raise ArtifactError(f"{where}: the DataFrame does not survive parquet: {exc}") from exc
        return rel

    def _xgboost(self, v: Any, where: str) -> dict[str, Any]:
        rel = self._file(where, ".ubj")
        v.save_model(self.root / rel)
        if isinstance(v, xgb.Booster):
            return {"__xgboost__": rel, "class": "Booster"}
        params = self.value(v.get_params(deep=False), f"{where}.get_params()")
        return {"__xgboost__": rel, "class": type(v).__name__, "params": params}


# ---- load ------------------------------------------------------------------------------
def load_forecaster(directory: str | Path, cls: type = GlobalForecaster) -> Any:
    """The ``cls`` saved by :func:`save_forecaster` in ``directory``.

    Raises :class:`ArtifactError` for another format, a newer version, another class or
    settings that ``cls.__init__`` does not take (a model written by a newer salesflow)."""
    root = Path(directory)
    doc = json.loads((root / SPEC_FILE).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ArtifactError(f"{root / SPEC_FILE} is not a {FORMAT} spec")
    if doc.get("version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{root / SPEC_FILE} is format version {doc.get('version')}; this salesflow "
            f"reads version {FORMAT_VERSION}: load it with the salesflow that wrote it"
        )
    if doc.get("class") != cls.__qualname__:
        raise ArtifactError(f"{root / SPEC_FILE} holds a {doc.get('class')}, not a {cls}")
    dec = _Decoder(root)
    settings = {k: dec.value(v) for k, v in doc["settings"].items()}
    unknown = sorted(set(settings) - set(setting_names(cls)))
    if unknown:
        raise ArtifactError(
            f"{root / SPEC_FILE} has settings {unknown} that {cls.__qualname__}.__init__ "
            "does not take: it was written by a newer salesflow; upgrade to load it"
        )
    model = cls(**settings)
    for k, v in doc["state"].items():
        setattr(model, k, dec.value(v))
    return model


class _Decoder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def value(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if not isinstance(v, dict):
            return v
        tags = [k for k in v if k.startswith("__")]
        if not tags:
            return {k: self.value(x) for k, x in v.items()}
        handlers = {
            "__float__": self._float,
            "__tuple__": self._tuple,
            "__dict__": self._dict,
            "__numpy__": self._numpy,
            "__ndarray__": self._ndarray,
            "__timestamp__": self._timestamp,
            "__dataclass__": self._dataclass,
            "__frame__": self._frame,
            "__series__": self._series,
            "__xgboost__": self._xgboost,
        }
        if len(tags) != 1 or tags[0] not in handlers:
            raise ArtifactError(f"unknown value tag {tags} in {SPEC_FILE}")
        return handlers[tags[0]](v)

    def _float(self, v: dict) -> float:
        return float(v["__float__"])

    def _tuple(self, v: dict) -> tuple:
        return tuple(self.value(x) for x in v["__tuple__"])

    def _dict(self, v: dict) -> dict:
        return {self.value(k): self.value(x) for k, x in v["__dict__"]}

    def _numpy(self, v: dict) -> np.generic:
        dtype = np.dtype(v["dtype"])
        if dtype.kind not in _NUMPY_KINDS:
            raise ArtifactError(f"numpy dtype {dtype} is not allowed in {SPEC_FILE}")
        scalar: Any = np.array(self.value(v["__numpy__"]), dtype=dtype)[()]
        return scalar

    def _ndarray(self, v: dict) -> np.ndarray:
        dtype = np.dtype(v["dtype"])
        if dtype.kind not in _NUMPY_KINDS:
            raise ArtifactError(f"numpy dtype {dtype} is not allowed in {SPEC_FILE}")
        return np.array(self.value(v["__ndarray__"]), dtype=dtype).reshape(v["shape"])

    def _timestamp(self, v: dict) -> pd.Timestamp:
        ts = pd.Timestamp(v["__timestamp__"]).as_unit(v["unit"])
        return ts if v.get("tz") is None else ts.tz_convert(v["tz"])

    def _dataclass(self, v: dict) -> Any:
        return rebuild_dataclass(_allowed_dataclass(v["__dataclass__"]), self.value(v["fields"]))

    def _path(self, rel: str) -> Path:
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ArtifactError(f"{rel!r} points outside the artifact folder")
        return path

    def _frame(self, v: dict) -> pd.DataFrame:
        return pd.read_parquet(self._path(v["__frame__"]))

    def _series(self, v: dict) -> pd.Series:
        return pd.read_parquet(self._path(v["__series__"]))["values"].rename(self.value(v["name"]))

    def _xgboost(self, v: dict) -> Any:
        name = v["class"]
        cls = getattr(xgb, name, None)
        ok = cls is xgb.Booster or (isinstance(cls, type) and issubclass(cls, xgb.XGBModel))
        if not ok or cls is None:
            raise ArtifactError(f"{name!r} is not an XGBoost model class")
        params = self.value(v.get("params", {}))
        model = cls(**params)
        model.load_model(self._path(v["__xgboost__"]))
        # load_model resets some wrapper attributes (base_score, booster,
        # enable_categorical) from the booster's config; the booster itself is exact.
        for k, x in params.items():
            if k in vars(model):
                setattr(model, k, x)
        return model


# ---- dataclasses -----------------------------------------------------------------------
def _allowed_dataclass(name: str) -> type:
    """The dataclass ``module:QualName``, only from the packages of this project."""
    module, _, qualname = name.partition(":")
    if module.split(".")[0] not in _DATACLASS_PACKAGES or not qualname.isidentifier():
        raise ArtifactError(f"dataclass {name!r} is not one of salesflow's or features'")
    cls = getattr(importlib.import_module(module), qualname, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ArtifactError(f"{name!r} is not a dataclass")
    return cls


def rebuild_dataclass(cls: type, fields: dict[str, Any]) -> Any:
    """``cls`` from ``dataclasses.asdict`` output: nested dataclass fields (by their type
    hints, also ``X | None``) are rebuilt; fields missing from ``fields`` take their
    defaults (a spec written before the field existed)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ArtifactError(
            f"{cls.__qualname__} has no fields {unknown}: the model was written by a newer "
            "salesflow; upgrade to load it"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in fields.items():
        nested = _dataclass_in(hints.get(name))
        if nested is not None and isinstance(value, dict):
            value = rebuild_dataclass(nested, value)
        kwargs[name] = value
    return cls(**kwargs)


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a type hint names, alone or in a union (``HolidaySpec | None``)."""
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            return t
    return None
