"""`salesflow serve` as a user runs it: a real `salesflow train` and `salesflow forecast`
(CLI processes, the test settings' synthetic panel) into a PostgreSQL schema of this test
and a temporary MLflow registry, then two API processes on free ports:

- ``polling``: ``serving.poll_seconds`` 1 -- picks up a new champion by itself;
- ``manual``: ``serving.poll_seconds`` 0 -- only ``POST /admin/reload`` (bearer token from
  ``SALESFLOW_ADMIN_TOKEN``, exported for every command as a user would) loads a new champion.

The API's answers are compared with the warehouse rows read here with SQL, and its
on-demand predictions with the stored forecast of the same origin. The last test moves the
champion alias: version 1 is registered again as version 2 (a copy in the registry: a
second training would add a minute and test nothing more here) and `salesflow rollback
--to 2` points the alias at it, as an operator would.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from .procs import REPO_ROOT, Processes, clean_env, run_cli
from .serve import (
    ADMIN_TOKEN_ENV,
    MODEL_NAME,
    READY_TIMEOUT_S,
    Service,
    copy_champion,
    create_schema,
    drop_schema,
    metric_value,
    start_prefect_server,
    start_service,
    venv_script,
    wait_for,
)

pytestmark = pytest.mark.e2e

TRAIN_TIMEOUT_S = 240
FORECAST_TIMEOUT_S = 180
POLL_TIMEOUT_S = 30  # poll_seconds is 1: the new version must show within this
TOKEN = "e2e-reload-token-not-a-secret"
TABLE = "sales_forecasts"  # warehouse.table default, inside this test's schema
BOUNDS = ("forecast", "lo_80", "hi_80", "lo_95", "hi_95")


@dataclass(frozen=True)
class Served:
    env: dict[str, str]  # the CLI's and the services' environment
    pg_url: str
    schema: str
    work: Path
    polling: Service
    manual: Service


@pytest.fixture(scope="module")
def served(
    pg_url: str,
    processes: Processes,
    tmp_path_factory: pytest.TempPathFactory,
    e2e_timings: dict[str, float],
) -> Iterator[Served]:
    """Train, forecast, and two running `salesflow serve` processes (see the module doc)."""
    work = tmp_path_factory.mktemp("serve-e2e")
    schema = create_schema(pg_url)
    started = []
    try:
        t0 = time.perf_counter()
        prefect, prefect_env = start_prefect_server(processes, work)
        started.append(prefect)
        e2e_timings["serve: prefect server start"] = time.perf_counter() - t0
        env = clean_env(
            **prefect_env,
            OMP_WAIT_POLICY="PASSIVE",
            SALESFLOW_ENV="test",
            SALESFLOW_PATHS__LOCAL_DIR=str(work / "local"),
            SALESFLOW_WAREHOUSE_URL=pg_url,
            SALESFLOW_WAREHOUSE__SCHEMA_NAME=schema,
            **{ADMIN_TOKEN_ENV: TOKEN},
        )
        t0 = time.perf_counter()
        res = _salesflow(["train"], env, TRAIN_TIMEOUT_S)
        assert f"Registered {MODEL_NAME} version 1 champion" in res.stdout, res.stdout
        e2e_timings["serve: salesflow train (v1)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = _salesflow(["forecast"], env, FORECAST_TIMEOUT_S)
        assert "version 1" in res.stdout, res.stdout
        e2e_timings["serve: salesflow forecast"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        polling = start_service(processes, "polling", env, work, poll_seconds="1")
        manual = start_service(processes, "manual", env, work, poll_seconds="0")
        started += [polling.bg, manual.bg]
        for svc in (polling, manual):
            wait_for(svc.bg, f"{svc.url}/ready", READY_TIMEOUT_S, f"salesflow serve ({svc.name})")
        e2e_timings["serve: two API processes -> /ready"] = time.perf_counter() - t0
        yield Served(env, pg_url, schema, work, polling, manual)
    finally:
        for bg in reversed(started):
            e2e_timings[f"serve: stop {bg.name}"] = bg.stop()
        drop_schema(pg_url, schema)


def _salesflow(args: list[str], env: dict[str, str], timeout: float) -> Any:
    return run_cli(
        [venv_script("salesflow"), *args],
        env=env,
        cwd=REPO_ROOT,
        timeout=timeout,
        what=f"salesflow {' '.join(args)}",
    )


def _pg(served: Served, where: str = "", **params: Any) -> pd.DataFrame:
    """The stored forecasts of the latest origin (SQL on PostgreSQL, not the API)."""
    import sqlalchemy as sa

    table = f"{served.schema}.{TABLE}"
    sql = (
        f"SELECT * FROM {table} WHERE model_name = :model AND forecast_origin = "
        f"(SELECT max(forecast_origin) FROM {table} WHERE model_name = :model) {where} "
        "ORDER BY unique_id, target_date"
    )
    engine = sa.create_engine(served.pg_url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(sa.text(sql), conn, params={"model": MODEL_NAME, **params})
    finally:
        engine.dispose()


def _one_series(served: Served) -> tuple[str, dict[str, str], pd.DataFrame]:
    """A series of the stored forecasts (not the first one), its keys and its rows."""
    import json

    ids = _pg(served)["unique_id"].drop_duplicates().tolist()
    uid = ids[len(ids) // 2]
    rows = _pg(served, "AND unique_id = :uid", uid=uid)
    keys = {k: str(v) for k, v in json.loads(rows["series_keys"].iloc[0]).items()}
    return uid, keys, rows


def _same(a: float | None, b: float | None, rel: float = 0.0, abs_: float = 0.0) -> bool:
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def test_ready_and_the_model_in_every_response(served: Served) -> None:
    """/health and /ready answer 200; /model/info, each body's model and each response's
    X-Model-* headers (errors too) name version 1 of the trained model."""
    svc = served.polling
    health = svc.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = svc.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True and ready.json()["reasons"] == []
    info = svc.get("/model/info").json()
    assert (info["name"], info["version"], info["alias"]) == (MODEL_NAME, "1", "champion")
    responses = [
        health,
        ready,
        svc.get("/forecasts", params={"limit": 1}),
        svc.get("/no-such-route"),
        svc.get("/forecasts", params={"limit": 0}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 422]
    for r in responses:
        assert r.headers["X-Model-Name"] == MODEL_NAME, r.request.url
        assert r.headers["X-Model-Version"] == "1", r.request.url
        assert r.json()["model"] == {"name": MODEL_NAME, "version": "1"}, r.request.url


def test_forecasts_of_one_series_are_the_warehouse_rows(served: Served) -> None:
    """GET /forecasts?store=..&dept=.. returns exactly the series' PostgreSQL rows of the
    latest origin: dates, horizons, values and model_version."""
    uid, keys, rows = _one_series(served)
    resp = served.polling.get("/forecasts", params=keys)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["origin"] == rows["forecast_origin"].iloc[0].isoformat()
    assert body["next_cursor"] is None and body["count"] == len(rows) == len(body["rows"])
    for got, (_, want) in zip(body["rows"], rows.iterrows(), strict=True):
        assert got["unique_id"] == uid and got["series_keys"] == keys
        assert got["target_date"] == want["target_date"].isoformat()
        assert got["horizon"] == want["horizon"]
        assert got["model_version"] == want["model_version"] == "1"
        for b in BOUNDS:  # double precision both ways: the very same numbers
            assert _same(got[b], want[b]), (b, got, want.to_dict())


def test_origin_and_date_filters_select_the_warehouse_rows(served: Served) -> None:
    """origin= (the stored one) and start=/end= select the same rows as SQL does; an
    origin without forecasts gives no rows."""
    _, keys, rows = _one_series(served)
    origin = rows["forecast_origin"].iloc[0].isoformat()
    dates = [d.isoformat() for d in rows["target_date"]]
    start, end = dates[1], dates[-2]  # a range inside the horizon
    body = served.polling.get("/forecasts", params={**keys, "origin": origin}).json()
    assert [r["target_date"] for r in body["rows"]] == dates
    body = served.polling.get("/forecasts", params={**keys, "start": start, "end": end}).json()
    assert [r["target_date"] for r in body["rows"]] == [d for d in dates if start <= d <= end]
    assert len(body["rows"]) == len(dates) - 2
    none = served.polling.get("/forecasts", params={**keys, "origin": "2001-01-05"})
    assert none.status_code == 200 and none.json()["rows"] == []


def test_pagination_walks_every_row_of_the_origin_once(served: Served) -> None:
    """Following next_cursor with a small limit visits every stored row of the origin
    exactly once, in (unique_id, target_date) order, and the last page has no cursor."""
    stored = _pg(served)
    limit = 7  # does not divide the number of rows: the last page is short
    assert len(stored) % limit != 0
    seen: list[tuple[str, str]] = []
    params: dict[str, Any] = {"limit": limit}
    pages = 0
    while True:
        body = served.polling.get("/forecasts", params=params).json()
        pages += 1
        assert len(body["rows"]) == (limit if body["next_cursor"] else len(stored) % limit)
        seen += [(r["unique_id"], r["target_date"]) for r in body["rows"]]
        if body["next_cursor"] is None:
            break
        params["after"] = body["next_cursor"]
        assert pages <= len(stored), "the cursor does not advance"
    want = [
        (u, d.isoformat()) for u, d in zip(stored["unique_id"], stored["target_date"], strict=True)
    ]
    assert seen == want
    assert pages == math.ceil(len(stored) / limit)


def test_csv_answer_has_the_rows_of_the_json_answer(served: Served) -> None:
    """Accept: text/csv answers CSV with the same rows and values as the JSON answer,
    and the key columns of the series."""
    _, keys, rows = _one_series(served)
    resp = served.polling.get("/forecasts", params=keys, headers={"Accept": "text/csv"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    assert resp.headers["X-Model-Version"] == "1"
    csv = pd.read_csv(io.StringIO(resp.text), dtype={k: str for k in keys})
    assert len(csv) == len(rows)
    for k, v in keys.items():
        assert (csv[k] == v).all()
    assert csv["target_date"].tolist() == [d.isoformat() for d in rows["target_date"]]
    assert csv["model_version"].astype(str).tolist() == rows["model_version"].tolist()
    for b in BOUNDS:  # CSV prints floats in full (repr): they read back unchanged
        assert csv[b].tolist() == pytest.approx(rows[b].tolist(), rel=1e-12)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param([], id="no-overrides"),
        # A no-op what-if: the request takes the path that re-forecasts from the series'
        # history (and its peers') instead of the cached whole-panel forecast.
        pytest.param([{"covariate": "temperature", "multiply": 1.0}], id="no-op-override"),
    ],
)
def test_predict_matches_the_stored_forecast_of_the_same_origin(
    served: Served, overrides: list[dict[str, Any]]
) -> None:
    """POST /predict for one series (same champion, same data) returns the forecast that
    `salesflow forecast` stored for the same origin, within float tolerance."""
    uid, keys, rows = _one_series(served)
    resp = served.polling.post("/predict", json={"series": [keys], "overrides": overrides})
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Model-Version"] == "1"
    body = resp.json()
    assert body["model"] == {"name": MODEL_NAME, "version": "1"} and body["errors"] == []
    assert body["origin"] == rows["forecast_origin"].iloc[0].isoformat()
    got = body["forecasts"]
    assert [r["target_date"] for r in got] == [d.isoformat() for d in rows["target_date"]]
    assert [r["horizon"] for r in got] == rows["horizon"].tolist()
    for g, (_, want) in zip(got, rows.iterrows(), strict=True):
        assert g["unique_id"] == uid and g["series_keys"] == keys
        for b in BOUNDS:
            assert _same(g[b], want[b], rel=1e-6, abs_=1e-3), (b, g, want.to_dict())


def test_metrics_count_the_requests(served: Served) -> None:
    """/metrics counts each /forecasts and /predict request by route and status, counts the
    predicted series and shows the served version."""
    svc = served.polling
    _, keys, _ = _one_series(served)

    def counts() -> tuple[float, float, float, float]:
        text = svc.get("/metrics").text
        return (
            metric_value(text, "salesflow_api_requests_total", route="/forecasts", status="200"),
            metric_value(text, "salesflow_api_requests_total", route="/forecasts", status="422"),
            metric_value(text, "salesflow_api_predicted_series_total", model_version="1"),
            metric_value(text, "salesflow_api_model", name=MODEL_NAME, version="1"),
        )

    ok0, bad0, predicted0, _ = counts()
    for _ in range(3):
        assert svc.get("/forecasts", params=keys).status_code == 200
    assert svc.get("/forecasts", params={"limit": "x"}).status_code == 422
    assert svc.post("/predict", json={"series": [keys, keys | {"dept": "1"}]}).status_code == 200
    ok1, bad1, predicted1, shown = counts()
    assert (ok1 - ok0, bad1 - bad0) == (3, 1)
    assert predicted1 - predicted0 == (1 if keys.get("dept") == "1" else 2)
    assert shown == 1
    text = svc.get("/metrics").text
    assert metric_value(text, "salesflow_api_request_seconds_count", route="/forecasts") >= 4


def test_a_new_champion_is_polled_and_reloaded_without_restart(
    served: Served, e2e_timings: dict[str, float]
) -> None:
    """After `salesflow rollback --to 2` moves the alias to version 2, the polling service
    serves it within its poll; the manual one keeps version 1 until POST /admin/reload with
    the bearer token (401 without it, or with a wrong one); /audit shows the move."""
    t0 = time.perf_counter()
    tracking_uri = f"sqlite:///{served.work / 'local' / 'mlflow.db'}"
    assert copy_champion(tracking_uri, MODEL_NAME) == "2"
    reason = "serve e2e: move the alias"
    res = _salesflow(["rollback", "--to", "2", "--reason", reason], served.env, 120)
    assert "to version 2" in res.stdout, res.stdout
    e2e_timings["serve: register version 2, salesflow rollback --to 2"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    version = _wait_for_version(served.polling, "2", POLL_TIMEOUT_S)
    assert version == "2", f"the polling service still serves version {version}"
    e2e_timings["serve: alias moved -> polled version 2"] = time.perf_counter() - t0
    _, keys, _ = _one_series(served)
    resp = served.polling.post("/predict", json={"series": [keys]})
    assert resp.status_code == 200 and resp.headers["X-Model-Version"] == "2"
    assert resp.json()["model"]["version"] == "2"
    stored = served.polling.get("/forecasts", params=keys)
    assert stored.headers["X-Model-Version"] == "2"  # the model served...
    assert {r["model_version"] for r in stored.json()["rows"]} == {"1"}  # ...and the rows' own
    text = served.polling.get("/metrics").text
    assert metric_value(text, "salesflow_api_model", name=MODEL_NAME, version="2") == 1
    assert metric_value(text, "salesflow_api_model", name=MODEL_NAME, version="1") == 0
    events = served.polling.get("/audit").json()["events"]
    moves = [(e["action"], e["from_version"], e["to_version"], e["reason"]) for e in events]
    assert ("rollback", "1", "2", reason) in moves

    manual = served.manual
    assert manual.get("/model/info").json()["version"] == "1"  # poll_seconds 0: no poll
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        denied = manual.post("/admin/reload", headers=headers)
        assert denied.status_code == 401, (headers, denied.text)
        assert TOKEN not in denied.text
    assert manual.get("/model/info").json()["version"] == "1"
    reload = manual.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reload.status_code == 200, reload.text
    body = reload.json()
    assert (body["reloaded"], body["previous_version"], body["version"]) == (True, "1", "2")
    assert body["model"]["version"] == "2"
    info = manual.get("/model/info")
    assert info.json()["version"] == "2" and info.headers["X-Model-Version"] == "2"
    again = manual.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert again.status_code == 200 and again.json()["reloaded"] is False
    assert again.headers["X-Model-Version"] == again.json()["model"]["version"] == "2"


def _wait_for_version(svc: Service, version: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    current = ""
    while time.monotonic() < deadline:
        current = svc.get("/model/info").json()["version"]
        if current == version:
            break
        time.sleep(0.5)
    return current
