"""The dashboard's pages under Streamlit's AppTest, on a real temp registry and warehouse
(a small champion trained, forecasts written from an origin with actuals after it, one
monitor run): the numbers shown are the warehouse's rows; empty states say what to run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from salesflow.serving.cli_dashboard import APP

TIMEOUT = 120  # the first run imports MLflow and reads the registry on a busy machine


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A local dir with a champion, its forecasts from 12 periods before the data's end and
    a monitor run; SALESFLOW_ENV=test points the app at it for the module's tests."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.batch_forecast import batch_forecast_flow
    from flows.monitor import monitor_flow
    from flows.training import training_flow
    from salesflow.config.settings import load_settings
    from salesflow.data.sources import load_sales

    root = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(root))
        mp.setenv("SALESFLOW_ENV", "test")
        mp.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
        dates = sorted(load_sales(load_settings("test").data).history["ds"].unique())
        origin = pd.Timestamp(dates[-12]).strftime("%Y-%m-%d")
        with prefect_test_harness(server_startup_timeout=120):
            training_flow(env="test")
            batch_forecast_flow(env="test", origin=origin)
            monitor_flow(env="test")
        yield root


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if page is not None:
        at.radio(key="page").set_value(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _number(text: str) -> float:
    return float(str(text).replace(",", ""))


def _warehouse(root) -> pd.DataFrame:
    from salesflow.storage.warehouse import read_forecasts

    return read_forecasts(f"sqlite:///{root}/warehouse.db")


def test_picked_series_shows_the_warehouse_rows_and_actuals(local):
    """Picking store 2 / dept 3 shows that series' stored forecast and bounds (to the
    cent), its origin, and the actuals of the data source on the dates that have them."""
    from salesflow.config.settings import load_settings
    from salesflow.data.sources import load_sales

    at = _app()
    at.selectbox(key="key_store").set_value("2").run()
    at.selectbox(key="key_dept").set_value("3").run()
    assert not at.exception
    shown = at.table[0].value
    rows = _warehouse(local).query("unique_id == '2/3'").sort_values("target_date")
    assert len(shown) == len(rows) == 8
    assert list(shown["target_date"]) == list(rows["target_date"].dt.strftime("%Y-%m-%d"))
    for col in ("forecast", "lo_80", "hi_80", "lo_95", "hi_95"):
        got = shown[col].map(_number).to_numpy()
        assert abs(got - rows[col].to_numpy()).max() < 0.006, col
    hist = load_sales(load_settings("test").data).history.query("unique_id == '2/3'")
    want = rows["target_date"].map(hist.set_index("ds")["y"])
    assert want.notna().all()  # the origin is 12 periods back: every date has its actual
    assert abs(shown["actual"].map(_number).to_numpy() - want.to_numpy()).max() < 0.006
    origin = rows["forecast_origin"].iloc[0].strftime("%Y-%m-%d")
    assert any(f"forecast origin {origin}" in c.value for c in at.caption)
    assert (at.query_params.get("store"), at.query_params.get("dept")) == ("2", "3")


def test_a_shared_link_opens_its_series(local):
    """``?store=3&dept=2`` opens that series; an unknown value falls back to the first."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update({"store": "3", "dept": "2"})
    at.run()
    assert not at.exception and any("Series `3/2`" in c.value for c in at.caption)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update({"store": "99"})
    at.run()
    assert any("Series `1/1`" in c.value for c in at.caption)


def test_store_totals_are_the_sums_of_the_stored_forecasts(local):
    """Each store's total over the horizon is the sum of its series' stored forecasts."""
    shown = _app("Store totals").table[0].value
    want = _warehouse(local).groupby("store")["forecast"].sum()
    got = shown.set_index("store")["forecast_total"].map(_number)
    assert sorted(got.index) == sorted(want.index)
    assert all(abs(got[s] - want[s]) <= 0.5 for s in want.index)
    assert set(shown["series"].astype(int)) == {4}


def test_accuracy_model_history_and_drift_pages(local):
    """Accuracy pools the stored accuracy rows (their row count), model history names the
    champion and the first promotion, the drift page shows the monitor run's summary."""
    from salesflow.monitor.monitoring import accuracy_table
    from salesflow.storage.sqlstore import read_frame

    acc = read_frame(f"sqlite:///{local}/warehouse.db", accuracy_table())
    shown = _app("Accuracy").table[0].value
    assert len(shown) == 1 and int(shown["n"].iloc[0]) == int(acc["n"].sum())
    at = _app("Model history")
    assert "version 1" in at.success[0].value
    audit = at.table[1].value
    assert list(audit["action"]) == ["promote"] and "first champion" in audit["reason"].iloc[0]
    (summary,) = local.glob("reports/*/summary.json")
    drift = json.loads(summary.read_text())["drift"]
    at = _app("Drift")
    table = at.table[0].value
    assert list(table["check"]) == list(drift)
    assert list(table["drift"] == "DETECTED") == [d["detected"] for d in drift.values()]
    assert len(at.get("download_button")) == len(drift)


def test_batch_page_forecasts_an_uploaded_csv_and_lists_bad_rows(local):
    """An uploaded CSV of two known series and an unknown one: the two are forecast over
    the horizon, the unknown one is listed with its line."""
    at = _app("Batch forecast")
    at.file_uploader(key="batch_csv").set_value(
        ("series.csv", b"store,dept\n1,1\n2,3\n9,9\n", "text/csv")
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "2 series forecast, 1 rows left out" in at.success[0].value
    errors = at.table[0].value
    assert list(errors["line"].astype(int)) == [4] and "9" in errors["series"].iloc[0]
    frame = at.dataframe[0].value
    assert sorted(frame["unique_id"].unique()) == ["1/1", "2/3"] and len(frame) == 16


@pytest.mark.parametrize(
    ("page", "says"),
    [
        ("Forecasts", "salesflow forecast --env test"),
        ("Store totals", "salesflow forecast --env test"),
        ("Accuracy", "salesflow monitor --env test"),
        ("Model history", "salesflow train --env test"),
        ("Drift", "salesflow monitor --env test"),
        ("Batch forecast", "salesflow train --env test"),
    ],
)
def test_empty_states_say_what_to_run(tmp_path, monkeypatch, page, says):
    """On an empty local dir every page says which command fills it."""
    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("SALESFLOW_ENV", "test")
    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    at = _app(page)
    assert any(says in i.value for i in at.info), [i.value for i in at.info]
