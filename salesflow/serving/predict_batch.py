"""Batch predictions from a CSV: ``POST /predict/batch`` and the dashboard's batch page.

The input CSV has one column per key of the data (e.g. ``store,dept``) and, optionally,
override columns ``covariate``, ``horizon`` or ``date``, ``value`` or ``multiply``: each
row names a series and at most one what-if change of it (several rows may name the same
series with different changes). A row that cannot be used (an unknown series, an empty
key, a value that is not a number, an override outside the forecast window, a repeat of an
earlier row) becomes a :class:`RowError` with its line number (the header is line 1) and
is left out; the other rows are forecast together. Problems with the whole file (empty, no
rows, a key column missing, an unknown column, more series than allowed) raise
:class:`PredictInputError`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pydantic import ValidationError

from salesflow.data.schema import DATE, SalesData
from salesflow.modelling.model import GlobalForecaster
from salesflow.serving.predict import BOUNDS, forecast_dates, forecast_origin, predict_series
from salesflow.serving.predict_inputs import (
    Override,
    PredictInputError,
    RowError,
    TooManySeries,
    history_start,
    resolve_override,
    resolve_series,
)

__all__ = ["OVERRIDE_COLUMNS", "BatchResult", "predict_batch_csv", "read_batch_csv"]

OVERRIDE_COLUMNS = ("covariate", "horizon", "date", "value", "multiply")


@dataclass
class BatchResult:
    """``csv``: the forecasts as CSV text (columns of ``frame``); ``errors``: the rows
    left out; ``n_series``: series forecast. Columns of ``frame``: unique_id, the keys,
    forecast_origin, target_date, horizon, forecast, lo_80, hi_80, lo_95, hi_95, then the
    caller's extra columns (e.g. model_name, model_version)."""

    csv: str
    errors: list[RowError]
    n_series: int
    frame: pd.DataFrame


def read_batch_csv(text: str, keys: list[str], max_series: int) -> pd.DataFrame:
    """The rows of the CSV as text (stripped; empty cells ''), with a ``line`` column.
    PredictInputError for an empty file, no rows, missing key columns, unknown columns, a
    malformed line; :class:`TooManySeries` for more than ``max_series`` distinct series."""
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise PredictInputError(f"the CSV is empty: give a header line {','.join(keys)}")
    try:
        rows = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, csv.Error) as exc:
        first = str(exc).strip().splitlines()[0]
        raise PredictInputError(f"the CSV could not be read: {first}") from None
    rows.columns = [str(c).strip() for c in rows.columns]
    missing = [k for k in keys if k not in rows.columns]
    if missing:
        raise PredictInputError(
            f"the CSV has no column {missing}: its header must hold the keys {keys} "
            f"(found {list(rows.columns)})"
        )
    unknown = [c for c in rows.columns if c not in keys and c not in OVERRIDE_COLUMNS]
    if unknown:
        raise PredictInputError(
            f"the CSV has unknown columns {unknown}: use the keys {keys} and optionally "
            f"{list(OVERRIDE_COLUMNS)}"
        )
    if rows.empty:
        raise PredictInputError("the CSV has a header but no rows: add one row per series")
    rows = rows.apply(lambda c: c.str.strip())
    for c in OVERRIDE_COLUMNS:
        if c not in rows:
            rows[c] = ""
    n = len(rows.drop_duplicates(keys))
    if n > max_series:
        raise TooManySeries(
            f"the CSV names {n:,} series, more than the limit of {max_series:,} per "
            "request: split it into smaller files"
        )
    return rows.assign(line=range(2, len(rows) + 2))


def predict_batch_csv(
    model: GlobalForecaster,
    data: SalesData,
    text: str,
    max_series: int,
    origin: Any = None,
    extra_columns: dict[str, str] | None = None,
) -> BatchResult:
    """Forecasts of the series named in the CSV ``text`` (see the module docstring), with
    their overrides, from ``origin`` (default: the period after the last observation);
    ``extra_columns`` are added to every output row (e.g. model_name, model_version)."""
    keys = list(data.keys)
    rows = read_batch_csv(text, keys, max_series)
    start = forecast_origin(model, data, origin)
    window = forecast_dates(model, data, start)
    series: list[dict[str, str]] = []
    overrides: list[Override] = []
    errors: list[RowError] = []
    seen: dict[tuple[str, ...], int] = {}
    for row in rows.to_dict("records"):
        s = {k: row[k] for k in keys}
        try:
            same = seen.get(tuple(row[c] for c in [*keys, *OVERRIDE_COLUMNS]))
            if same is not None:
                raise PredictInputError(f"repeats line {same}: left out")
            seen[tuple(row[c] for c in [*keys, *OVERRIDE_COLUMNS])] = row["line"]
            override = _row_override(row, s, data, model, start, window)
        except PredictInputError as exc:
            errors.append(RowError(row["line"], s, str(exc)))
            continue
        series.append(s)
        if override is not None:
            overrides.append(override)
    frame = _forecast(model, data, series, overrides, start, extra_columns or {})
    return BatchResult(frame.to_csv(index=False), errors, frame["unique_id"].nunique(), frame)


def _row_override(
    row: dict[str, Any],
    series: dict[str, str],
    data: SalesData,
    model: GlobalForecaster,
    start: pd.Timestamp,
    window: pd.Index,
) -> Override | None:
    """The row's override (None when its override cells are empty), checked against the
    series, the model and the forecast window; PredictInputError naming what is wrong."""
    empty = [k for k in series if not series[k]]
    if empty:
        raise PredictInputError(f"key column {empty} is empty")
    uid = resolve_series(data, [series])[0]
    if history_start(data)[uid] >= start:
        raise PredictInputError(f"series has no observation before the origin {start.date()}")
    cells = {c: row[c] for c in OVERRIDE_COLUMNS if row[c] != ""}
    if not cells:
        return None
    if "covariate" not in cells:
        raise PredictInputError(f"override cells {sorted(cells)} without a covariate")
    try:
        override = Override(
            keys=series,
            covariate=cells["covariate"],
            horizon=_number(cells, "horizon", int),
            date=cells.get("date"),
            value=cells.get("value"),
            multiply=_number(cells, "multiply", float),
        )
    except ValidationError as exc:
        raise PredictInputError(_validation_message(exc)) from None
    resolve_override(override, [uid], data, model, window)
    return override


def _number(cells: dict[str, str], name: str, kind: type) -> Any:
    if name not in cells:
        return None
    try:
        number = float(cells[name])
    except ValueError:
        raise PredictInputError(f"{name} {cells[name]!r} is not a number") from None
    if kind is int:
        if not number.is_integer():
            raise PredictInputError(f"{name} {cells[name]!r} is not a whole number")
        return int(number)
    return number


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def _forecast(
    model: GlobalForecaster,
    data: SalesData,
    series: list[dict[str, str]],
    overrides: list[Override],
    start: pd.Timestamp,
    extra: dict[str, str],
) -> pd.DataFrame:
    """The output frame (see :class:`BatchResult`); no rows when no series is left."""
    cols = ["unique_id", *data.keys, "forecast_origin", "target_date", "horizon", "forecast"]
    if not series:
        return pd.DataFrame(columns=[*cols, *BOUNDS, *extra])
    result = predict_series(model, data, series, overrides, origin=start)
    out = result.frame.rename(columns={DATE: "target_date"})
    out.insert(len(data.keys) + 1, "forecast_origin", start)
    out["forecast_origin"] = pd.to_datetime(out["forecast_origin"]).dt.date
    out["target_date"] = pd.to_datetime(out["target_date"]).dt.date
    for name, value in extra.items():
        out[name] = value
    return out[[*cols, *BOUNDS, *extra]]
