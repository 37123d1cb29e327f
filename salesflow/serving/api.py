"""The REST API (``salesflow serve``): stored forecasts from the warehouse, on-demand
predictions from the champion, the model's facts and history, Prometheus metrics.

:func:`create_app` builds the FastAPI app. Routes only translate HTTP to the core and
back: reads go through :mod:`salesflow.serving.queries`, predictions through
:mod:`salesflow.serving.predict`, the champion is held by
:class:`~salesflow.serving.champion.ChampionHolder` (polled, swapped without a restart).
Every response carries ``X-Model-Name``/``X-Model-Version`` and every JSON body a
``model`` object; errors are ``{"detail": ..., "model": ...}`` and never hold a traceback.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from salesflow.config.settings import Settings
from salesflow.errors import UserError, redact
from salesflow.serving import api_io, queries
from salesflow.serving.api_metrics import BodyLimitAndMetrics
from salesflow.serving.api_models import (
    AccuracyResponse,
    AuditResponse,
    BatchResponse,
    ErrorResponse,
    ForecastsResponse,
    HealthResponse,
    IsoDate,
    ModelInfoResponse,
    ModelsResponse,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
    ReloadResponse,
)
from salesflow.serving.api_state import ServingState
from salesflow.serving.champion import ChampionHolder
from salesflow.serving.history import HistoryCache
from salesflow.storage.sqlengine import WarehouseUnavailable

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": what}
    for code, what in {
        400: "malformed request body",
        413: "request body too large",
        422: "invalid input (one entry per field)",
        500: "internal error (logged by the server; no details in the response)",
        503: "no champion loaded, or the warehouse is unreachable",
    }.items()
}
_BEARER = HTTPBearer(auto_error=False, description="the token in serving.admin_token_env")
_FORECAST_PARAMS = {"origin", "start", "end", "after", "limit"}
_FORECAST_HINT = " (the other query parameters are origin, start, end, after and limit)"
_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}


def create_app(
    settings: Settings,
    holder: ChampionHolder | None = None,
    history: HistoryCache | None = None,
) -> FastAPI:
    """The API app on ``settings``; the champion is loaded at startup (when not yet) and
    polled every ``serving.poll_seconds`` while the app runs."""
    state = ServingState(
        settings, holder or ChampionHolder(settings), history or HistoryCache(settings)
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if state.holder.current is None:
            await run_in_threadpool(state.holder.refresh)
        state.metrics.show_model(*state.header_model())
        state.warm()
        state.holder.start()
        try:
            yield
        finally:
            state.holder.stop()

    app = FastAPI(
        title="salesflow",
        summary="Stored and on-demand sales forecasts of the salesflow champion",
        version="1",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.serving = state
    _handlers(app, state)
    if settings.serving.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.serving.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
            expose_headers=["X-Model-Name", "X-Model-Version", "X-Next-Cursor"],
        )
    app.add_middleware(
        BodyLimitAndMetrics,
        limit=settings.serving.max_body_bytes,
        metrics=state.metrics,
        model=state.header_model,
    )
    _status_routes(app, state)
    _read_routes(app, state)
    _predict_routes(app, state)
    return app


# --- errors ---------------------------------------------------------------------------------


def _error(state: ServingState, status: int, detail: Any, headers: Any = None) -> JSONResponse:
    body = {"detail": detail, "model": state.model_ref().model_dump()}
    return JSONResponse(body, status_code=status, headers=headers)


def _handlers(app: FastAPI, state: ServingState) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(state, 422, [api_io.field_error(e) for e in exc.errors()])

    @app.exception_handler(HTTPException)
    async def _http(_r: Request, exc: HTTPException) -> JSONResponse:
        return _error(state, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(WarehouseUnavailable)
    async def _warehouse(request: Request, exc: WarehouseUnavailable) -> JSONResponse:
        # The (redacted) URL names internal hosts: in the server log and /ready only.
        log.warning("%s %s: %s", request.method, request.url.path, redact(exc))
        return _error(state, 503, "the warehouse is unreachable: try again later (see /ready)")

    @app.exception_handler(Exception)
    async def _failure(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        response = _error(state, 500, "internal error: see the server log")
        name, version = state.header_model()
        response.headers.update({"X-Model-Name": name, "X-Model-Version": version or ""})
        return response


@contextmanager
def _user_errors(*loc: str, hint: str = "") -> Iterator[None]:
    """A user's mistake (UserError, ValueError from the core) as a 422 at ``loc``; an
    unknown series key gets ``hint`` appended."""
    try:
        yield
    except (UserError, ValueError) as exc:
        msg = redact(exc) + (hint if isinstance(exc, queries.UnknownSeriesKey) else "")
        raise RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}]) from None


# --- routes ---------------------------------------------------------------------------------


def _status_routes(app: FastAPI, state: ServingState) -> None:
    @app.get("/health", tags=["status"])
    def health() -> HealthResponse:
        """The process answers."""
        return HealthResponse(status="ok", model=state.model_ref())

    @app.get("/ready", tags=["status"], responses={503: {"model": ReadyResponse}})
    def ready() -> Any:
        """A champion is loaded and the warehouse answers (else 503 with the reasons)."""
        reasons = [] if state.holder.current else [f"no champion: {state.holder.reason}"]
        try:
            queries.check_warehouse(state.settings)
        except Exception as exc:  # noqa: BLE001 - reported as the reason
            reasons.append(redact(exc))
        body = ReadyResponse(ready=not reasons, reasons=reasons, model=state.model_ref())
        return JSONResponse(body.model_dump(mode="json"), status_code=503 if reasons else 200)

    @app.get("/model/info", tags=["model"])
    def model_info() -> ModelInfoResponse:
        """The champion: version, alias, MLflow run, trained-until, backtest metrics, features,
        data fingerprint."""
        info = state.model_info(state.champion())
        return ModelInfoResponse(model=state.model_ref(), **info)

    @app.get("/models", tags=["model"])
    def models() -> ModelsResponse:
        """The model's registered versions, newest first, with aliases and status."""
        return ModelsResponse(
            model=state.model_ref(), versions=queries.model_versions(state.settings)
        )

    @app.get("/audit", tags=["model"])
    def audit(limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> AuditResponse:
        """Promotions, rejections and rollbacks, newest first, with their reasons."""
        events = queries.audit_events(state.settings, limit)
        return AuditResponse(model=state.model_ref(), events=events)

    @app.get("/accuracy", tags=["model"])
    def accuracy() -> AccuracyResponse:
        """Realized accuracy by model version, origin and horizon (from the monitor)."""
        rows = api_io.records(queries.realized_accuracy(state.settings))
        return AccuracyResponse(model=state.model_ref(), rows=rows)

    @app.get("/metrics", tags=["status"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics: requests, latency, predictions, the model served."""
        state.metrics.show_model(*state.header_model())
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post(
        "/admin/reload",
        tags=["admin"],
        responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
    )
    def reload(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> ReloadResponse:
        """Look up the champion alias now and load the version it names (bearer token from
        the environment variable named by serving.admin_token_env; unset: disabled)."""
        _check_token(credentials, state.settings.serving.admin_token_env)
        before = state.holder.current
        reloaded = state.holder.refresh()
        after = state.holder.current
        if not reloaded and state.holder.reason:
            raise HTTPException(
                503, f"reload failed, still serving the previous champion: {state.holder.reason}"
            )
        return ReloadResponse(
            model=state.model_ref(),
            reloaded=reloaded,
            previous_version=before.version if before else None,
            version=after.version if after else None,
        )


def _check_token(credentials: HTTPAuthorizationCredentials | None, variable: str) -> None:
    expected = os.environ.get(variable, "")
    if not expected:
        raise HTTPException(
            404, f"admin reload is disabled: set the environment variable {variable}"
        )
    token = credentials.credentials.strip() if credentials else ""
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


def _read_routes(app: FastAPI, state: ServingState) -> None:
    @app.get("/forecasts", tags=["forecasts"], response_model=ForecastsResponse, responses=_CSV)
    def forecasts(
        request: Request,
        origin: Annotated[
            IsoDate | None, Query(description="forecast origin (default: latest)")
        ] = None,
        start: Annotated[IsoDate | None, Query(description="first target date")] = None,
        end: Annotated[IsoDate | None, Query(description="last target date")] = None,
        after: Annotated[
            str | None, Query(max_length=2000, description="next_cursor of the previous page")
        ] = None,
        limit: Annotated[
            int | None, Query(ge=1, description="rows per page (capped at serving.max_page_size)")
        ] = None,
    ) -> Any:
        """Stored forecasts of one origin, by (unique_id, target_date), a page at a time.
        Filter by series keys with more query parameters, e.g. ``store=1&dept=3`` (all keys:
        one series). ``Accept: text/csv`` answers CSV (the next cursor in X-Next-Cursor)."""
        keys = api_io.key_filters(request, _FORECAST_PARAMS)
        size = min(limit or state.settings.serving.page_size, state.settings.serving.max_page_size)
        with _user_errors("query", hint=_FORECAST_HINT):
            page = queries.forecast_page(state.settings, keys, origin, start, end, after, size)
        model = state.model_ref()
        if api_io.wants_csv(request):
            return api_io.forecasts_csv(page)
        return ForecastsResponse(
            model=model,
            origin=page.origin,
            count=len(page.rows),
            next_cursor=page.next_cursor,
            rows=page.rows,
        )


def _predict_routes(app: FastAPI, state: ServingState) -> None:
    limit = state.settings.serving.max_predict_series

    @app.post("/predict", tags=["predict"])
    def predict(body: PredictRequest) -> PredictResponse:
        """Forecasts of the named series from the latest history, with optional what-if
        overrides of known-ahead covariates; says which inputs were overridden."""
        loaded = state.champion()
        if len(body.series) > limit:
            raise HTTPException(
                413,
                f"{len(body.series):,} series asked; at most {limit:,} "
                "(serving.max_predict_series)",
            )
        with _user_errors("body"):
            result = api_io.predict(loaded, state.history.get(), body)
        state.metrics.predictions.labels("predict", loaded.version).inc(result.n_series)
        return PredictResponse(model=state.model_ref(), **result.body)

    @app.post(
        "/predict/batch",
        tags=["predict"],
        response_model=BatchResponse,
        responses={**_CSV, 413: {"model": ErrorResponse}},
    )
    async def predict_batch(
        request: Request,
        file: Annotated[
            UploadFile,
            File(description="CSV: one row per series (key columns), optional override columns"),
        ],
    ) -> Any:
        """A CSV of series in (key columns, optional covariate, horizon or date, value or
        multiply), a CSV of forecasts out; rows that cannot be used are left out and
        counted in X-Row-Errors. ``Accept: application/json`` answers JSON with the row
        errors and the CSV. At most serving.max_predict_series series (more: 413)."""
        loaded = state.champion()
        raw = await file.read()
        with _user_errors("body", "file"):
            text = api_io.decode_csv(raw)
            result = await run_in_threadpool(
                api_io.predict_batch, loaded, state.history.get, text, limit
            )
        state.metrics.predictions.labels("batch", loaded.version).inc(result.n_series)
        if api_io.wants_json(request):
            return BatchResponse(model=state.model_ref(), **api_io.batch_body(result))
        return api_io.batch_response(result)
