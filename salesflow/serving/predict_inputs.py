"""What a prediction request names, checked against the data and the model.

Series are given by their key values (text, compared with the data's key columns as
text); overrides (:class:`Override`) by a covariate, a period of the forecast window and a
new value or a factor. Anything that does not fit raises :class:`PredictInputError` with a
message naming it; :func:`apply_overrides` changes the future covariates and records each
change.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from salesflow.data.schema import DATE, ID, SalesData
from salesflow.errors import UserError
from salesflow.modelling.model import GlobalForecaster

__all__ = [
    "Override",
    "PredictInputError",
    "RowError",
    "TooManySeries",
    "apply_overrides",
    "peer_series",
    "resolve_override",
    "resolve_series",
]

SHOWN = 5  # unknown names listed in a message


class PredictInputError(UserError):
    """A prediction request names something the data or the model does not have."""


class TooManySeries(PredictInputError):
    """A request names more series than allowed (the message names the limit)."""


@dataclass(frozen=True)
class RowError:
    """A problem with one input row (``row``: its line in the CSV, the header is line 1)
    or one series; ``series`` holds its key values when they could be read."""

    row: int | None
    series: dict[str, str] | None
    message: str


class Override(BaseModel):
    """A what-if change of one covariate over the forecast window.

    ``keys``: the series (key column -> value; some keys select every requested series
    that has them; empty: every requested series). ``date`` or ``horizon`` (1-based
    period of the forecast) picks one target period; neither: all of them. ``value``
    replaces the covariate, ``multiply`` scales it (exactly one of them).
    """

    model_config = ConfigDict(extra="forbid")

    keys: dict[str, str] = Field(default_factory=dict)
    covariate: str = Field(min_length=1)
    date: dt.date | None = None
    horizon: int | None = Field(None, ge=1)
    value: float | str | None = None
    multiply: float | None = None

    @model_validator(mode="after")
    def _one_of_each(self) -> Override:
        if self.date is not None and self.horizon is not None:
            raise ValueError("give date or horizon, not both")
        if (self.value is None) == (self.multiply is None):
            raise ValueError("give exactly one of value or multiply")
        for name in ("value", "multiply"):
            v = getattr(self, name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number")
        return self


@dataclass
# --- series ------------------------------------------------------------------------------


class PerObject:
    """A small cache keyed by the identity of live objects, emptied as they are freed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, objs: tuple[Any, ...], make: Any) -> Any:
        key = tuple(id(o) for o in objs)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            value = make()
            self.items[key] = value
            for o in objs:
                weakref.finalize(o, self.items.pop, key, None)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
            return value


_INDEX = PerObject(4)
_POSITIONS = PerObject(8)


@dataclass(frozen=True)
class SeriesIndex:
    """The data's series: ``keys`` (index: unique_id, one text column per key, as given in
    requests), the ``ids`` of each tuple of key texts, the first and last observed dates."""

    keys: pd.DataFrame
    ids: dict[tuple[str, ...], str]
    start: pd.Series
    first: pd.Timestamp
    last: pd.Timestamp


def series_index(data: SalesData) -> SeriesIndex:
    """The :class:`SeriesIndex` of ``data``, worked out once per data."""

    def make() -> SeriesIndex:
        st = data.static_frame()[[ID, *data.keys]]
        keys = st.assign(**{k: st[k].astype(str) for k in data.keys}).set_index(ID)
        tuples = keys[list(data.keys)].itertuples(index=False, name=None)
        ids = dict(zip(tuples, keys.index, strict=True))
        start = data.history.groupby(ID)[DATE].min()
        return SeriesIndex(keys, ids, start, start.min(), data.last_date)

    return _INDEX.get((data,), make)


def history_start(data: SalesData) -> pd.Series:
    """The first observation's date of every series (index: unique_id)."""
    return series_index(data).start


def resolve_series(data: SalesData, series: list[dict[str, str]]) -> list[str]:
    """The unique_id of each series given by its key values (repeats dropped, order kept).
    :class:`PredictInputError` for a missing or unknown key column or an unknown series."""
    if not series:
        raise PredictInputError("no series given: name at least one by its key values")
    keys = list(data.keys)
    for s in series:
        missing = [k for k in keys if k not in s]
        extra = [k for k in s if k not in keys]
        if missing or extra:
            what = f"missing {missing}" if missing else f"unknown {extra}"
            raise PredictInputError(
                f"series {dict(s)}: key columns {what}; a series is given by {keys}"
            )
    index = series_index(data)
    given = list(dict.fromkeys(tuple(str(s[k]).strip() for k in keys) for s in series))
    unknown = ["/".join(t) for t in given if t not in index.ids]
    if unknown:
        shown = ", ".join(unknown[:SHOWN]) + (" .." if len(unknown) > SHOWN else "")
        raise PredictInputError(
            f"{len(unknown)} series not in the data ({'/'.join(keys)}: {shown}); "
            f"the data has {len(index.ids):,} series, e.g. {_example(keys, index)}"
        )
    return [index.ids[t] for t in given]


def _example(keys: list[str], index: SeriesIndex) -> dict[str, str]:
    return dict(zip(keys, next(iter(index.ids)), strict=True)) if index.ids else {}


def peer_series(data: SalesData, ids: list[str]) -> list[str]:
    """``ids`` and every series sharing a key value with one of them (with two or more
    keys): the series whose history the model reads to forecast ``ids``."""
    if len(data.keys) < 2:
        return list(ids)
    index = series_index(data).keys
    mine = index.loc[ids]
    near = pd.Series(False, index=index.index)
    for k in data.keys:
        near |= index[k].isin(set(mine[k]))
    return list(index.index[near.to_numpy()])


def rows_of(frame: pd.DataFrame, ids: list[str], owner: Any = None) -> pd.DataFrame:
    """The rows of ``frame`` whose unique_id is in ``ids``, in ``frame``'s order. Each
    series' row positions are worked out once per ``frame`` (kept while ``owner``, the
    object holding it, lives; default: the frame itself)."""
    positions = _POSITIONS.get(
        (owner if owner is not None else frame, frame),
        lambda: frame.groupby(ID, sort=False).indices,
    )
    parts = [positions[i] for i in ids if i in positions]
    rows = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=int)
    return frame.iloc[rows]


def subset(data: SalesData, ids: list[str]) -> SalesData:
    """``data`` with the history and future rows of ``ids`` only."""
    return replace(
        data, history=rows_of(data.history, ids, data), future=rows_of(data.future, ids, data)
    )


# --- overrides -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OverrideTarget:
    """An override resolved against the request: the series and dates it changes."""

    ids: list[str]
    covariate: str
    dates: pd.DatetimeIndex
    value: float | str | None
    multiply: float | None
    categorical: bool


def _model_covariates(model: GlobalForecaster) -> list[str]:
    return list(getattr(model, "grid_covariates_", None) or model.covariates_)


def resolve_override(
    o: Override, ids: list[str], data: SalesData, model: GlobalForecaster, window: pd.Index
) -> OverrideTarget:
    """Which series and dates ``o`` changes; PredictInputError naming what does not fit."""
    allowed = _model_covariates(model)
    if o.covariate not in allowed:
        raise PredictInputError(
            f"override covariate {o.covariate!r} is not an input of the model: use one of {allowed}"
        )
    unknown = [k for k in o.keys if k not in data.keys]
    if unknown:
        raise PredictInputError(
            f"override keys {unknown} are not key columns: use some of {list(data.keys)}"
        )
    index = series_index(data).keys.loc[ids]
    hit = pd.Series(True, index=index.index)
    for k, v in o.keys.items():
        hit &= index[k] == str(v).strip()
    chosen = list(index.index[hit.to_numpy()])
    if not chosen:
        raise PredictInputError(
            f"override of {o.covariate!r} names series {o.keys} that is not among the "
            "requested series: add it to the series or fix the keys"
        )
    return OverrideTarget(
        chosen, o.covariate, _override_dates(o, window), *_override_change(o, model, data)
    )


def _override_dates(o: Override, window: pd.Index) -> pd.DatetimeIndex:
    span = f"{window[0].date()} .. {window[-1].date()}, horizons 1-{len(window)}"
    if o.horizon is not None:
        if o.horizon > len(window):
            raise PredictInputError(
                f"override horizon {o.horizon} is outside the forecast window ({span})"
            )
        return pd.DatetimeIndex([window[o.horizon - 1]])
    if o.date is not None:
        ts = pd.Timestamp(o.date)
        if ts not in window:
            raise PredictInputError(
                f"override date {ts.date()} is not a target date of the forecast ({span})"
            )
        return pd.DatetimeIndex([ts])
    return pd.DatetimeIndex(window)


def _override_change(
    o: Override, model: GlobalForecaster, data: SalesData
) -> tuple[float | str | None, float | None, bool]:
    """(value, multiply, categorical) with the value typed like the covariate."""
    categorical = o.covariate in getattr(data, "categorical", [])
    if categorical:
        if o.multiply is not None:
            raise PredictInputError(
                f"covariate {o.covariate!r} is categorical: give a value, not multiply"
            )
        v = o.value
        text = str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip()
        return text, None, True  # JSON 0 means the category "0", not "0.0"
    if o.value is None:
        return None, o.multiply, False
    try:
        number = float(o.value)
    except ValueError:
        raise PredictInputError(
            f"override value {o.value!r} of covariate {o.covariate!r} is not a number"
        ) from None
    if not math.isfinite(number):
        raise PredictInputError(f"override value of {o.covariate!r} must be a finite number")
    _require_float32(pd.Series([number]), o.covariate)
    return number, None, False


def apply_overrides(
    future: pd.DataFrame, targets: list[OverrideTarget], index: pd.DataFrame
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """``future`` (unique_id, ds, covariates) with the overrides applied in order, and one
    record per changed cell: series (keys as text, from ``index``: :func:`series_index`),
    covariate, date, before, after."""
    out = future.copy()
    records: list[dict[str, Any]] = []
    for t in targets:
        rows = out.index[out[ID].isin(set(t.ids)) & out[DATE].isin(t.dates)]
        before = out.loc[rows, t.covariate].copy()
        if t.categorical:
            after = pd.Series(t.value, index=rows, dtype=object)
            out[t.covariate] = out[t.covariate].astype(object)
        else:
            number = before.astype(float) * t.multiply if t.multiply is not None else t.value
            after = pd.Series(number, index=rows, dtype=float)
            _require_float32(after, t.covariate)
            out[t.covariate] = out[t.covariate].astype(float)
        out.loc[rows, t.covariate] = after
        series = index.loc[out.loc[rows, ID]].to_dict("records")
        dates = out.loc[rows, DATE]
        for keys, d, b, a in zip(series, dates, before, after, strict=True):
            records.append(
                {
                    "series": keys,
                    "covariate": t.covariate,
                    "date": pd.Timestamp(d).date().isoformat(),
                    "before": plain(b),
                    "after": plain(a),
                }
            )
    return out, records


def _require_float32(values: pd.Series, covariate: str) -> None:
    """The model reads 32-bit floats: a value beyond their range would be infinite."""
    limit = float(np.finfo(np.float32).max)
    if (values.abs() > limit).any():
        raise PredictInputError(
            f"override of {covariate!r} gives values beyond +-{limit:.3g}, more than the "
            "model can read: use a smaller value or factor"
        )


def plain(v: Any) -> Any:
    """A JSON-ready scalar: a float, or text; None for a missing value."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        f = float(v)
        return None if math.isnan(f) else f
    return str(v)
