"""HTTP <-> core translation for :mod:`salesflow.serving.api`: query-string key filters,
CSV answers, frames as JSON records, and the calls into the on-demand prediction code."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from salesflow.serving.api_models import PredictRequest
from salesflow.serving.champion import LoadedChampion
from salesflow.serving.queries import FORECAST_FIELDS, ForecastPage

__all__ = [
    "Predicted",
    "batch_body",
    "batch_response",
    "decode_csv",
    "field_error",
    "forecasts_csv",
    "key_filters",
    "predict",
    "predict_batch",
    "records",
    "wants_csv",
    "wants_json",
]

_BOUNDS = ("lo_80", "hi_80", "lo_95", "hi_95")


def field_error(e: dict[str, Any]) -> dict[str, Any]:
    """A pydantic/FastAPI error entry as {loc, msg, type} (no echo of the input)."""
    loc = [p if isinstance(p, int) else str(p) for p in e.get("loc", ())]
    return {"loc": loc, "msg": str(e.get("msg", "")), "type": str(e.get("type", "value_error"))}


def key_filters(request: Request, known: set[str]) -> dict[str, str] | None:
    """The query parameters that are not ``known`` options: series-key filters (one value
    each; a repeated key is a 422)."""
    out: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key in known:
            continue
        if key in out:
            raise RequestValidationError(
                [
                    {
                        "loc": ("query", key),
                        "msg": f"series key {key!r} given twice: give each key once",
                        "type": "value_error",
                    }
                ]
            )
        out[key] = value
    return out or None


def wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "").lower()


def forecasts_csv(page: ForecastPage) -> Response:
    """The page as CSV: unique_id, one column per series key, then the forecast fields."""
    rows = page.rows
    keys = list(dict.fromkeys(k for r in rows for k in r["series_keys"]))
    cols = [
        "unique_id",
        *keys,
        *(c for c in FORECAST_FIELDS if c not in ("unique_id", "series_keys")),
    ]
    frame = pd.DataFrame(
        [{**r["series_keys"], **{c: r[c] for c in FORECAST_FIELDS}} for r in rows],
        columns=[*cols, "series_keys"],
    )[cols]
    headers = {"X-Forecast-Origin": page.origin.isoformat() if page.origin else ""}
    if page.next_cursor:
        headers["X-Next-Cursor"] = page.next_cursor
    return Response(frame.to_csv(index=False), media_type="text/csv", headers=headers)


def _plain(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, pd.Timestamp):
        return None if pd.isna(v) else v.to_pydatetime()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is pd.NaT or (not isinstance(v, (str, dict, list)) and pd.isna(v)):
        return None
    return v


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-ready dicts: NaN/NaT as None, numpy scalars as Python, Timestamps as
    datetimes."""
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    v = _plain(v)
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    return v


@dataclass(frozen=True)
class Predicted:
    """A prediction as the API answers it: the body's fields and the series forecast."""

    body: dict[str, Any]
    n_series: int


def predict(loaded: LoadedChampion, data: Any, request: PredictRequest) -> Predicted:
    """Run :func:`salesflow.serving.predict.predict_series` for ``request``."""
    from salesflow.serving.predict import predict_series

    result = predict_series(
        loaded.model, data, request.series, list(request.overrides), request.origin
    )
    frame = result.frame
    keys = [k for k in loaded.model.keys_ if k in frame.columns]
    rows = []
    for r in frame.to_dict("records"):
        row = {
            "unique_id": str(r["unique_id"]),
            "series_keys": {k: str(_plain(r[k])) for k in keys},
            "target_date": pd.Timestamp(r["ds"]).date(),
            "horizon": int(r["horizon"]),
            "forecast": float(r["forecast"]),
        }
        row.update({b: _plain(r.get(b)) for b in _BOUNDS})
        rows.append(row)
    errors = _row_errors(result.errors)
    origin = getattr(result, "origin", None)
    body = {
        "origin": pd.Timestamp(origin).date() if origin is not None else None,
        "forecasts": rows,
        "overridden": [_jsonable(o) for o in result.overridden],
        "errors": errors,
    }
    return Predicted(body, int(frame["unique_id"].nunique()) if len(frame) else 0)


def decode_csv(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text: upload a CSV") from None


def predict_batch(
    loaded: LoadedChampion, data: Callable[[], Any], text: str, max_series: int
) -> Any:
    """Run :func:`salesflow.serving.predict_batch.predict_batch_csv` on the history
    ``data()``; more series than ``max_series`` is a 413."""
    from salesflow.serving.predict_batch import predict_batch_csv
    from salesflow.serving.predict_inputs import TooManySeries

    extra = {"model_name": loaded.name, "model_version": loaded.version}
    try:
        return predict_batch_csv(loaded.model, data(), text, max_series, extra_columns=extra)
    except TooManySeries as exc:
        raise HTTPException(413, f"{exc} (serving.max_predict_series)") from None


def _row_errors(errors: list[Any]) -> list[dict[str, Any]]:
    return [{"row": e.row, "keys": e.series, "message": e.message} for e in errors]


def batch_body(result: Any) -> dict[str, Any]:
    """The JSON answer's fields: n_series, errors, csv."""
    return {"n_series": result.n_series, "errors": _row_errors(result.errors), "csv": result.csv}


def batch_response(result: Any) -> Response:
    """The forecasts CSV, with the number of row errors and series in headers."""
    headers = {"X-Row-Errors": str(len(result.errors)), "X-Series": str(result.n_series)}
    return Response(result.csv, media_type="text/csv", headers=headers)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "").lower()
