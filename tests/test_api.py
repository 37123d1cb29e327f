"""The REST API with FastAPI's TestClient on a real champion: a model trained on the test
panel, registered in a temp MLflow registry, its forecasts in a temp SQLite warehouse."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

TOKEN_ENV = "SALESFLOW_TEST_ADMIN_TOKEN"


@dataclass
class Served:
    """A temp registry with versions 1 (champion) and 2 of one model, and a warehouse
    holding version 1's forecasts at a past origin (with realized accuracy) and the latest."""

    local_dir: Path
    overrides: dict[str, Any]
    data: Any
    latest: pd.DataFrame

    def settings(self, **serving: Any):
        from salesflow.config.settings import load_settings

        s = {"poll_seconds": 0, "page_size": 10, "max_page_size": 25, "admin_token_env": TOKEN_ENV}
        return load_settings(
            "test", paths={"local_dir": str(self.local_dir)}, serving={**s, **serving}
        )


def _register(settings, model, data, bt) -> str:
    from salesflow.modelling.registry import log_and_register
    from salesflow.modelling.training import example_input, run_record

    rec = run_record(model, data, bt, settings)
    reg = log_and_register(
        model,
        tracking_uri=settings.tracking_uri,
        experiment=settings.mlflow.experiment,
        artifact_location=settings.artifact_location,
        model_name=settings.model.name,
        alias=settings.mlflow.champion_alias,
        params=rec.params,
        metrics=rec.metrics,
        tags=rec.tags,
        figures={},
        tables={},
        input_example=example_input(data),
        set_alias_if_missing=False,
    )
    return reg.version


def _write_forecasts(settings, model, data, version: str, origin=None) -> pd.DataFrame:
    from salesflow.modelling.scoring import score_series, warehouse_rows
    from salesflow.storage.warehouse import write_forecasts

    pred, _ = score_series(model, data, origin)
    rows = warehouse_rows(pred, model.keys_, settings.model.name, version, "run", None)
    write_forecasts(settings.warehouse_url, rows, settings.warehouse.table)
    return rows


def build_served(local_dir: Path) -> Served:
    """Train on the test panel; register two versions; write forecasts, accuracy, audit."""
    from salesflow.data.sources import load_sales
    from salesflow.governance.promotion import promote_audited
    from salesflow.modelling.training import evaluate, fit_champion_candidate
    from salesflow.monitor.monitoring import join_actuals, realized_accuracy, write_accuracy
    from salesflow.storage.warehouse import read_forecasts

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
        mp.delenv(TOKEN_ENV, raising=False)
        srv = Served(local_dir, {}, None, pd.DataFrame())
        s = srv.settings()
        data = load_sales(s.data)
        bt = evaluate(data, s)
        model = fit_champion_candidate(data, s, bt)
        v1 = _register(s, model, data, bt)
        promote_audited(s, v1, None, "first champion (test)", {"wmae": 1.0}, None, "test")
        _register(s, model, data, bt)  # version 2: same model, no alias yet
        past = data.history["ds"].sort_values().unique()[-6]
        _write_forecasts(s, model, data.as_of(past), v1)
        joined = join_actuals(read_forecasts(s.warehouse_url), data.history)
        write_accuracy(s.warehouse_url, realized_accuracy(joined), s.monitor.accuracy_table)
        _write_forecasts(s, model, data, v1)
        rows = read_forecasts(s.warehouse_url)
        srv.data = data
        srv.latest = rows[rows["forecast_origin"] == rows["forecast_origin"].max()]
        return srv


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    """A champion, its registry and warehouse, built once per module."""
    return build_served(tmp_path_factory.mktemp("api") / "local")


@pytest.fixture()
def client(served, monkeypatch):
    """A TestClient on the API over the served registry and warehouse."""
    from salesflow.serving.api import create_app

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    with TestClient(create_app(served.settings())) as c:
        yield c


def _ids(served) -> tuple[str, str]:
    first = served.latest.sort_values("unique_id").iloc[0]
    keys = json.loads(first["series_keys"])
    return str(keys["store"]), str(keys["dept"])


# --- status and model routes ------------------------------------------------------------


def test_health_ready_and_model_on_every_response(client):
    """/health and /ready answer 200 with the champion in the body and the headers."""
    for path in ("/health", "/ready", "/models", "/forecasts?limit=1", "/nope"):
        r = client.get(path)
        assert r.headers["X-Model-Name"] == "salesflow-forecaster"
        assert r.headers["X-Model-Version"] == "1"
        assert r.json()["model"] == {"name": "salesflow-forecaster", "version": "1"}
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").json() == {
        "ready": True,
        "reasons": [],
        "model": {"name": "salesflow-forecaster", "version": "1"},
    }
    assert client.get("/nope").status_code == 404


def test_not_ready_without_a_champion(tmp_path, monkeypatch):
    """An empty registry: /ready 503 saying why, /model/info and /predict 503, reads work."""
    from salesflow.config.settings import load_settings
    from salesflow.serving.api import create_app

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    s = load_settings("test", paths={"local_dir": str(tmp_path)}, serving={"poll_seconds": 0})
    with TestClient(create_app(s)) as c:
        r = c.get("/ready")
        assert r.status_code == 503 and not r.json()["ready"]
        assert "champion" in r.json()["reasons"][0]
        assert r.headers["X-Model-Version"] == "" and r.json()["model"]["version"] is None
        assert c.get("/model/info").status_code == 503
        assert c.post("/predict", json={"series": [{"store": "1", "dept": "1"}]}).status_code == 503
        f = c.get("/forecasts")
        assert f.status_code == 200 and f.json()["rows"] == [] and f.json()["origin"] is None
        assert c.get("/models").json()["versions"] == [] and c.get("/audit").json()["events"] == []
        assert c.get("/accuracy").json()["rows"] == []


def test_model_info_versions_audit_accuracy(client, served):
    """The champion's facts, both versions, the promotion and the realized accuracy."""
    info = client.get("/model/info").json()
    assert info["version"] == "1" and info["alias"] == "champion" and info["run_id"]
    assert info["trained_until"] == str(served.data.last_date.date())
    assert info["keys"] == ["store", "dept"] and len(info["features"]) > 5
    assert info["backtest"]["model_wmae"] > 0 and len(info["data_fingerprint"]) == 16
    versions = client.get("/models").json()["versions"]
    assert [v["version"] for v in versions] == ["2", "1"]
    assert versions[1]["aliases"] == ["champion"] and versions[1]["backtest_wmae"] > 0
    events = client.get("/audit").json()["events"]
    assert [(e["action"], e["to_version"]) for e in events] == [("promote", "1")]
    assert client.get("/audit?limit=0").status_code == 422
    acc = client.get("/accuracy").json()["rows"]
    assert acc and {r["model_version"] for r in acc} == {"1"}
    assert all(r["n"] > 0 and r["wmae"] >= 0 for r in acc)


# --- forecasts --------------------------------------------------------------------------


def _walk(client, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of /forecasts with ``params``, following next_cursor."""
    rows: list[dict[str, Any]] = []
    after = None
    for _ in range(1000):
        body = client.get(
            "/forecasts", params={**params, **({"after": after} if after else {})}
        ).json()
        assert body["count"] == len(body["rows"]) <= params.get("limit", 10)
        rows += body["rows"]
        after = body["next_cursor"]
        if after is None:
            return rows
    raise AssertionError("more than 1000 pages")


def test_forecast_pages_hold_every_row_once(client, served):
    """Walking next_cursor returns each stored row of the latest origin exactly once."""
    rows = _walk(client, {"limit": 7})
    seen = [(r["unique_id"], r["target_date"]) for r in rows]
    expected = {
        (u, str(d.date()))
        for u, d in served.latest[["unique_id", "target_date"]].itertuples(index=False)
    }
    assert len(seen) == len(set(seen)) == len(expected) and set(seen) == expected


def test_forecast_filters_and_csv(client, served):
    """store+dept give one series' horizons with the stored values; CSV carries the same."""
    store, dept = _ids(served)
    r = client.get("/forecasts", params={"store": store, "dept": dept})
    rows = r.json()["rows"]
    stored = served.latest[served.latest["unique_id"] == f"{store}/{dept}"].sort_values(
        "target_date"
    )
    assert [x["forecast"] for x in rows] == pytest.approx(stored["forecast"].tolist())
    assert {x["series_keys"]["store"] for x in rows} == {store}
    one_store = _walk(client, {"store": store, "limit": 5})
    assert len(one_store) == (served.latest["store"] == store).sum()
    last = rows[-1]["target_date"]
    assert [
        x["target_date"]
        for x in client.get(
            "/forecasts", params={"store": store, "dept": dept, "start": last}
        ).json()["rows"]
    ] == [last]
    csv = client.get(
        "/forecasts", params={"store": store, "limit": 5}, headers={"Accept": "text/csv"}
    )
    assert csv.headers["content-type"].startswith("text/csv") and csv.headers["X-Next-Cursor"]
    frame = pd.read_csv(io.StringIO(csv.text), dtype={"store": str, "dept": str})
    assert list(frame.columns[:3]) == ["unique_id", "store", "dept"] and len(frame) == 5
    json_page = client.get("/forecasts", params={"store": store, "limit": 5}).json()["rows"]
    assert frame["forecast"].tolist() == pytest.approx([x["forecast"] for x in json_page])


def test_forecast_limit_is_capped(client):
    """A limit above serving.max_page_size returns max_page_size rows."""
    body = client.get("/forecasts", params={"limit": 10**9}).json()
    assert body["count"] == 25 and body["next_cursor"]
    assert client.get("/forecasts").json()["count"] == 10


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("origin=2012-13-01", ["query", "origin"]),
        ("limit=0", ["query", "limit"]),
        ("limit=ten", ["query", "limit"]),
        ("after=bogus", ["query"]),
        ("item=7", ["query"]),
        ("store=1&store=2", ["query", "store"]),
    ],
)
def test_forecast_bad_queries_are_422(client, query, where):
    """Bad dates, limits, cursors and keys: 422 naming the field, model in the body."""
    r = client.get(f"/forecasts?{query}")
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail[0]["loc"][: len(where)] == where and detail[0]["msg"]
    assert r.json()["model"]["version"] == "1"
    if query == "item=7":
        assert "keys are ['store', 'dept']" in detail[0]["msg"] and "origin" in detail[0]["msg"]


# --- predictions ------------------------------------------------------------------------


def test_predict_is_the_stored_batch_forecast(client, served):
    """/predict without overrides returns the batch forecast of the series."""
    store, dept = _ids(served)
    r = client.post("/predict", json={"series": [{"store": store, "dept": dept}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["version"] == "1" and body["overridden"] == [] and body["errors"] == []
    stored = served.latest[served.latest["unique_id"] == f"{store}/{dept}"].sort_values(
        "target_date"
    )
    got = body["forecasts"]
    assert [x["target_date"] for x in got] == [str(d.date()) for d in stored["target_date"]]
    assert [x["forecast"] for x in got] == pytest.approx(stored["forecast"].tolist(), rel=1e-6)
    assert got[0]["series_keys"] == {"store": store, "dept": dept} and got[0]["lo_80"] is not None


def test_predict_override_is_reported(client, served):
    """A what-if override changes the inputs it names, and the response lists them."""
    store, dept = _ids(served)
    series = {"store": store, "dept": dept}
    over = {"keys": series, "covariate": "markdown1", "horizon": 3, "multiply": 2.0}
    r = client.post("/predict", json={"series": [series], "overrides": [over]})
    assert r.status_code == 200, r.text
    assert len(r.json()["overridden"]) >= 1
    assert "markdown1" in json.dumps(r.json()["overridden"])


@pytest.mark.parametrize(
    "body",
    [
        {"series": []},
        {"series": [{"store": "999", "dept": "1"}]},
        {"series": [{"store": "1"}]},
        {"series": [{"store": "1", "dept": "1"}], "overrides": [{"covariate": "x", "value": 1}]},
        {"series": [{"store": "1", "dept": "1"}], "overrides": [{"covariate": "markdown1"}]},
        {"series": [{"store": "1", "dept": "1"}], "surprise": 1},
        {"series": "store 1"},
    ],
)
def test_predict_bad_input_is_422(client, body):
    """Unknown series, keys, covariates, malformed overrides and extra fields: 422."""
    r = client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["msg"] and "Traceback" not in r.text


def test_predict_batch_csv(client, served):
    """A CSV of series in, a CSV of their forecasts out; a bad row is reported, not fatal."""
    store, dept = _ids(served)
    text = f"store,dept\n{store},{dept}\n999,1\n"
    r = client.post("/predict/batch", files={"file": ("series.csv", text, "text/csv")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["X-Model-Version"] == "1" and r.headers["X-Row-Errors"] == "1"
    frame = pd.read_csv(io.StringIO(r.text), dtype=str)
    assert set(frame["unique_id"]) == {f"{store}/{dept}"} and set(frame["model_version"]) == {"1"}
    files = {"file": ("series.csv", text, "text/csv")}
    body = client.post("/predict/batch", files=files, headers={"Accept": "application/json"})
    assert body.json()["n_series"] == 1 and body.json()["model"]["version"] == "1"
    assert [e["row"] for e in body.json()["errors"]] == [3]
    assert body.json()["csv"] == r.text
    bad = client.post("/predict/batch", files={"file": ("x.csv", b"\xff\xfe\x00", "text/csv")})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "file"]
    assert client.post("/predict/batch").status_code == 422


# --- limits, errors, admin, metrics ---------------------------------------------------


def test_body_limit_is_413(served, monkeypatch):
    """A body over serving.max_body_bytes is refused by its length or while streaming."""
    from salesflow.serving.api import create_app

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    big = json.dumps({"series": [{"store": "1", "dept": str(i)} for i in range(2000)]})
    with TestClient(create_app(served.settings(max_body_bytes=5000))) as c:
        r = c.post("/predict", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "5,000" in r.json()["detail"]
        assert r.headers["X-Model-Version"] == "1"
        chunks = (big[i : i + 1000].encode() for i in range(0, len(big), 1000))
        r = c.post("/predict", content=chunks, headers={"Content-Type": "application/json"})
        assert r.status_code == 413


def test_too_many_series_is_413(served, monkeypatch):
    """More series than serving.max_predict_series: 413 naming the limit."""
    from salesflow.serving.api import create_app

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    with TestClient(create_app(served.settings(max_predict_series=2))) as c:
        series = [{"store": "1", "dept": str(i)} for i in range(3)]
        r = c.post("/predict", json={"series": series})
        assert r.status_code == 413 and "max_predict_series" in r.json()["detail"]
        text = "store,dept\n" + "".join(f"1,{i}\n" for i in range(1, 4))
        r = c.post("/predict/batch", files={"file": ("s.csv", text, "text/csv")})
        assert r.status_code == 413 and "max_predict_series" in r.json()["detail"]


def test_failure_is_500_without_a_trace(served, monkeypatch, caplog):
    """An unexpected error: 500, a generic message, the model headers; logged server-side."""
    from salesflow.serving import queries
    from salesflow.serving.api import create_app

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)

    def boom(*_a, **_k):
        raise RuntimeError("secret-detail in /srv/app/secret.py")

    monkeypatch.setattr(queries, "model_versions", boom)
    with TestClient(create_app(served.settings()), raise_server_exceptions=False) as c:
        r = c.get("/models")
    assert r.status_code == 500
    assert "secret" not in r.text and "Traceback" not in r.text
    assert r.json()["detail"].startswith("internal error")
    assert r.headers["X-Model-Version"] == "1"
    assert "secret-detail" in caplog.text


def test_unreachable_warehouse_is_503(served, monkeypatch):
    """A warehouse that does not answer: data routes 503 without its address, /ready says
    why (password hidden), /health stays 200."""
    from salesflow.serving.api import create_app

    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", "postgresql+psycopg://u:pw-123@127.0.0.1:1/x")
    with TestClient(create_app(served.settings())) as c:
        r = c.get("/forecasts")
        assert r.status_code == 503 and "127.0.0.1" not in r.text and "pw-123" not in r.text
        ready = c.get("/ready")
        assert ready.status_code == 503 and "pw-123" not in ready.text
        assert "cannot reach the warehouse" in ready.json()["reasons"][0]
        assert c.get("/health").status_code == 200


def test_admin_reload_needs_the_token_and_picks_up_a_moved_alias(served, monkeypatch):
    """Token unset: 404; wrong: 401; right: the new alias target is served at once."""
    from salesflow.modelling.registry import client as mlflow_client
    from salesflow.serving.api import create_app

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    s = served.settings()
    mc = mlflow_client(s.tracking_uri)
    with TestClient(create_app(s)) as c:
        assert c.post("/admin/reload").status_code == 404
        monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
        for auth in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret-token"}):
            r = c.post("/admin/reload", headers=auth)
            assert r.status_code == 401 and "s3cret" not in r.text
        good = {"Authorization": "Bearer s3cret-token"}
        assert c.post("/admin/reload", headers=good).json()["reloaded"] is False
        mc.set_registered_model_alias(s.model.name, "champion", "2")
        try:
            r = c.post("/admin/reload", headers=good)
            assert r.json() | {"model": None} == {
                "model": None,
                "reloaded": True,
                "previous_version": "1",
                "version": "2",
            }
            assert r.headers["X-Model-Version"] == "2"  # the reload's own answer agrees
            assert r.headers.get_list("X-Model-Version") == ["2"]
            assert c.get("/health").headers["X-Model-Version"] == "2"
            assert c.get("/model/info").json()["version"] == "2"
        finally:
            mc.set_registered_model_alias(s.model.name, "champion", "1")


def test_poll_picks_up_a_moved_alias_without_restart(served, monkeypatch):
    """With serving.poll_seconds > 0 the served version follows the alias by itself."""
    import time

    from salesflow.modelling.registry import client as mlflow_client
    from salesflow.serving.api import create_app

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    s = served.settings(poll_seconds=0.2)
    mc = mlflow_client(s.tracking_uri)
    with TestClient(create_app(s)) as c:
        assert c.get("/health").headers["X-Model-Version"] == "1"
        mc.set_registered_model_alias(s.model.name, "champion", "2")
        try:
            deadline = time.monotonic() + 60
            while c.get("/health").headers["X-Model-Version"] != "2":
                assert time.monotonic() < deadline, "the poll never loaded version 2"
                time.sleep(0.2)
            assert 'version="2"' in c.get("/metrics").text
        finally:
            mc.set_registered_model_alias(s.model.name, "champion", "1")


def test_metrics_count_requests_latency_predictions_and_model(client, served):
    """/metrics: Prometheus text with requests by route and status, latency buckets, the
    predictions made and the model version as a label."""
    store, dept = _ids(served)
    client.get("/forecasts", params={"limit": 1})
    client.get("/forecasts", params={"limit": 0})
    client.post("/predict", json={"series": [{"store": store, "dept": dept}]})
    text = client.get("/metrics").text
    assert 'salesflow_api_requests_total{method="GET",route="/forecasts",status="200"} 1.0' in text
    assert 'salesflow_api_requests_total{method="GET",route="/forecasts",status="422"} 1.0' in text
    assert (
        'salesflow_api_request_seconds_bucket{le="0.025",method="GET",route="/forecasts"}' in text
    )
    assert 'salesflow_api_predicted_series_total{endpoint="predict",model_version="1"} 1.0' in text
    assert 'salesflow_api_model{name="salesflow-forecaster",version="1"} 1.0' in text


def test_cors_only_when_configured(served, monkeypatch):
    """No CORS headers by default; the configured origin is allowed, others are not."""
    from salesflow.serving.api import create_app

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    origin = {"Origin": "https://planner.example"}
    with TestClient(create_app(served.settings())) as c:
        assert "access-control-allow-origin" not in c.get("/health", headers=origin).headers
    s = served.settings(cors_origins=["https://planner.example"])
    with TestClient(create_app(s)) as c:
        allowed = c.get("/health", headers=origin).headers
        assert allowed["access-control-allow-origin"] == "https://planner.example"
        other = c.get("/health", headers={"Origin": "https://evil.example"}).headers
        assert "access-control-allow-origin" not in other


def test_serve_command_options():
    """`salesflow serve` takes --env, --host and --port (a bad port is refused)."""
    from salesflow.commands.cli import build_parser
    from salesflow.errors import UserError

    args = build_parser().parse_args(["serve", "--env", "test", "--port", "8123"])
    assert (args.env, args.port, args.host) == ("test", 8123, None) and callable(args.func)
    with pytest.raises(UserError, match="not a port number"):
        build_parser().parse_args(["serve", "--port", "70000"])


def test_failed_reload_keeps_the_champion(served, monkeypatch, caplog):
    """A version that cannot be loaded: the old champion keeps serving, the reload answers
    503 saying why, and the server log has it."""
    from salesflow.modelling.registry import ChampionUnreadable
    from salesflow.modelling.registry import client as mlflow_client
    from salesflow.serving import champion
    from salesflow.serving.api import create_app

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    monkeypatch.setenv(TOKEN_ENV, "tok")
    s = served.settings()
    mc = mlflow_client(s.tracking_uri)
    with TestClient(create_app(s)) as c:
        assert c.get("/health").headers["X-Model-Version"] == "1"

        def unreadable(*_a, **_k):  # injected fault: version 2's artifact is unreadable
            raise ChampionUnreadable("version 2 could not be loaded: artifact missing")

        monkeypatch.setattr(champion, "load_forecaster", unreadable)
        mc.set_registered_model_alias(s.model.name, "champion", "2")
        try:
            r = c.post("/admin/reload", headers={"Authorization": "Bearer tok"})
            assert r.status_code == 503 and "artifact missing" in r.json()["detail"]
            assert r.headers["X-Model-Version"] == "1"
            assert c.get("/model/info").json()["version"] == "1"
            assert "keeping version 1" in caplog.text
        finally:
            mc.set_registered_model_alias(s.model.name, "champion", "1")
