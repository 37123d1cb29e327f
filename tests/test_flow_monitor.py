"""The monitor flow on the drift scenario (configs/scenario.yaml) under prefect_test_harness:
drift in the shifted columns is detected and the events reach the Prefect server; on the
same data without injected drift nothing fires."""

from __future__ import annotations

import json

import pytest
from prefect.testing.utilities import prefect_test_harness

NO_DRIFT = {"data": {"synthetic": {"drift": None}}}
SHIFTED = {"temperature", "fuel_price", "cpi"}


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _cycle(tmp_path, monkeypatch, overrides=None):
    """Champion before the drift, forecasts from 2012-08-03, actuals to 2012-10-26, monitor."""
    from flows.batch_forecast import batch_forecast_flow
    from flows.monitor import monitor_flow
    from flows.training import training_flow

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    training_flow(env="scenario", as_of="2012-04-27", overrides=overrides)
    batch_forecast_flow(env="scenario", as_of="2012-07-27", overrides=overrides)
    return monitor_flow(env="scenario", overrides=overrides)


def _events(prefix: str) -> list[dict]:
    """Events the Prefect server received, read back through its API."""
    import time

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 30  # the server persists events in batches, every few s
    with get_client(sync_client=True) as client:
        while True:
            r = client._client.post(
                "/events/filter", json={"filter": {"event": {"prefix": [prefix]}}, "limit": 50}
            )
            r.raise_for_status()
            if r.json()["events"] or time.monotonic() > deadline:
                return r.json()["events"]
            time.sleep(1)


def test_injected_drift_is_detected_and_events_fire(harness, tmp_path, monkeypatch):
    """The shifted covariates drift, unemployment does not; drift and degradation events
    with the model as resource reach the server; realized accuracy is stored."""
    from salesflow.storage.sqlstore import count_rows

    out = _cycle(tmp_path, monkeypatch)
    assert out["drift"]["feature"] and out["drift"]["target"]
    assert set(out["drifted_columns"]["feature"]) >= SHIFTED
    assert "unemployment" not in out["drifted_columns"]["feature"]
    assert out["degraded"] and out["realized_wmae"] > out["backtest_wmae"]
    assert set(out["events"]) == {"salesflow.drift.detected", "salesflow.performance.degraded"}
    got = _events("salesflow.drift.detected")
    assert got and got[0]["resource"]["prefect.resource.id"] == "salesflow.model.salesflow-scenario"
    assert "temperature" in str(got[0]["payload"])
    url = f"sqlite:///{tmp_path}/warehouse.db"
    assert count_rows(url, "forecast_accuracy") == 13
    assert len(list((tmp_path / "reports").glob("*/feature-drift.html"))) == 1
    (summary,) = (tmp_path / "reports").glob("*/summary.json")  # read by the dashboard
    s = json.loads(summary.read_text())
    assert s["champion_version"] == out["model_version"] and s["drift"]["feature"]["detected"]
    assert set(s["drift"]["feature"]["drifted_columns"]) == set(out["drifted_columns"]["feature"])
    assert s["drift"]["feature"]["report"] == "feature-drift.html"


def _drift_summaries() -> list[str]:
    """The markdown of every drift-summary artifact on the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    flt = ArtifactFilter(key=ArtifactFilterKey(any_=["drift-summary"]))
    with get_client(sync_client=True) as client:
        return [str(a.data) for a in client.read_artifacts(artifact_filter=flt)]


def test_each_monitor_run_keeps_its_reports_and_links_them(harness, tmp_path, monkeypatch):
    """A second monitor run on the same data leaves a second set of HTML reports (the first
    stays), each run's drift summary links its own reports by path, and says what moved in
    business terms before the p-values; runs are named after flow, env, model, as-of."""
    from flows.monitor import monitor_flow

    _cycle(tmp_path, monkeypatch)
    monitor_flow(env="scenario")
    folders = sorted(p for p in (tmp_path / "reports").iterdir() if p.is_dir())
    assert len(folders) == 2
    for folder in folders:
        assert {p.name for p in folder.glob("*.html")} >= {
            "feature-drift.html",
            "target-drift.html",
        }
        (summary,) = [m for m in _drift_summaries() if str(folder) in m]
        assert f"`{folder / 'feature-drift.html'}`" in summary
        assert summary.index("- sales +") < summary.index("| y_scaled |")
    runs = _runs_named("monitor-forecasts env=scenario model=salesflow-scenario champion=v")
    assert len(runs) >= 2 and all(r.name.endswith(" as-of=latest") for r in runs)


def _runs_named(prefix: str) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [r for r in client.read_flow_runs(limit=200) if r.name.startswith(prefix)]


def test_stable_data_raises_no_alarm(harness, tmp_path, monkeypatch):
    """Without injected drift: no drift, no degradation, no event."""
    out = _cycle(tmp_path, monkeypatch, NO_DRIFT)
    assert not out["drift"]["feature"] and not out["drift"]["target"], out["drifted_columns"]
    assert not out["degraded"]
    assert out["events"] == []
