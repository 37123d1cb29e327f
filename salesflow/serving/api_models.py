"""Request and response bodies of the REST API (pydantic): they make the OpenAPI schema
exact, so clients and the fuzz tests can rely on it."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from salesflow.serving.predict import Override

__all__ = [
    "AccuracyResponse",
    "AccuracyRow",
    "AuditEvent",
    "AuditResponse",
    "BatchResponse",
    "ErrorResponse",
    "FieldError",
    "ForecastRow",
    "ForecastsResponse",
    "HealthResponse",
    "IsoDate",
    "ModelInfoResponse",
    "ModelRef",
    "ModelVersion",
    "ModelsResponse",
    "PredictRequest",
    "PredictResponse",
    "PredictedRow",
    "ReadyResponse",
    "ReloadResponse",
    "RowErrorOut",
]


def _iso_date(value: Any) -> Any:
    """Only ISO dates (YYYY-MM-DD) as dates: pydantic would take 0 for 1970-01-01."""
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise ValueError("a date must be written YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not a date: write YYYY-MM-DD") from None


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]


class ModelRef(BaseModel):
    """The model the service answers with (version None: no champion loaded)."""

    name: str
    version: str | None


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: e.g. ['query', 'limit'], ['body', 'series']")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error: what is wrong (a message, or one entry per field) and the model."""

    detail: str | list[FieldError]
    model: ModelRef


class HealthResponse(BaseModel):
    status: str = Field(description="'ok' while the process answers")
    model: ModelRef


class ReadyResponse(BaseModel):
    ready: bool
    reasons: list[str] = Field(description="why not ready (empty when ready)")
    model: ModelRef


class ForecastRow(BaseModel):
    unique_id: str
    series_keys: dict[str, str]
    forecast_origin: dt.date
    target_date: dt.date
    horizon: int
    forecast: float
    lo_80: float | None
    hi_80: float | None
    lo_95: float | None
    hi_95: float | None
    model_name: str
    model_version: str


class ForecastsResponse(BaseModel):
    model: ModelRef
    origin: dt.date | None = Field(description="the forecast origin of the rows (None: none)")
    count: int
    next_cursor: str | None = Field(description="pass as 'after' for the next page; None: last")
    rows: list[ForecastRow]


class ModelInfoResponse(BaseModel):
    model: ModelRef
    name: str
    version: str
    alias: str
    run_id: str
    loaded_at: dt.datetime
    trained_until: dt.date | None
    horizon: int | None
    freq: str | None
    keys: list[str]
    covariates: list[str]
    features: list[str]
    data_fingerprint: str | None
    code_version: str | None
    env: str | None
    backtest: dict[str, float] = Field(description="the MLflow run's backtest metrics")


class ModelVersion(BaseModel):
    version: str
    aliases: list[str]
    status: str | None
    trained_until: str | None
    env: str | None
    created: dt.datetime | None
    run_id: str | None
    backtest_wmae: float | None
    wmae_vs_seasonal_naive: float | None


class ModelsResponse(BaseModel):
    model: ModelRef
    versions: list[ModelVersion]


class AuditEvent(BaseModel):
    event_id: str
    at: dt.datetime | None
    action: str
    model_name: str
    from_version: str | None
    to_version: str | None
    reason: str
    actor: str
    env: str | None = None
    flow_run_id: str | None = None
    metrics: Any = Field(None, description="the decision's figures (JSON)")


class AuditResponse(BaseModel):
    model: ModelRef
    events: list[AuditEvent]


class AccuracyRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_name: str
    model_version: str
    forecast_origin: dt.date
    horizon: int
    wmae: float | None
    mae: float | None
    rmse: float | None
    bias: float | None
    n: int
    computed_at: dt.datetime | None


class AccuracyResponse(BaseModel):
    model: ModelRef
    rows: list[AccuracyRow]


class PredictRequest(BaseModel):
    """Series to forecast from the latest history, by their keys (e.g. {"store": "1",
    "dept": "3"}), with optional overrides."""

    model_config = ConfigDict(extra="forbid")

    series: list[dict[str, str]] = Field(min_length=1)
    overrides: list[Override] = Field(default_factory=list)
    origin: IsoDate | None = Field(
        None, description="forecast origin (default: the period after the last observation)"
    )


class PredictedRow(BaseModel):
    unique_id: str
    series_keys: dict[str, str]
    target_date: dt.date
    horizon: int
    forecast: float
    lo_80: float | None = None
    hi_80: float | None = None
    lo_95: float | None = None
    hi_95: float | None = None


class RowErrorOut(BaseModel):
    row: int | None = Field(None, description="its CSV line (the header is line 1), if any")
    keys: dict[str, str] | None = None
    message: str


class PredictResponse(BaseModel):
    model: ModelRef
    origin: dt.date | None
    forecasts: list[PredictedRow]
    overridden: list[dict[str, Any]] = Field(description="the inputs that were overridden")
    errors: list[RowErrorOut]


class BatchResponse(BaseModel):
    model: ModelRef
    n_series: int = Field(description="series forecast")
    errors: list[RowErrorOut] = Field(description="input rows left out, with why")
    csv: str = Field(description="the forecasts as CSV")


class ReloadResponse(BaseModel):
    model: ModelRef
    reloaded: bool = Field(description="a new version was loaded")
    previous_version: str | None
    version: str | None
