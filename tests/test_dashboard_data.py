"""The dashboard's frames (salesflow.serving.dashboard_data), the monitor summary it reads,
the table formatting and the streamlit command line."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from salesflow.serving import dashboard_data as dd


def _forecasts(ids: list[tuple[str, str]], origin: str = "2012-01-06", h: int = 3) -> pd.DataFrame:
    """Rows shaped like queries.series_forecast: h horizons per (store, dept)."""
    rows = []
    for store, dept in ids:
        for k in range(h):
            f = 100.0 * int(store) + int(dept) + k
            rows.append(
                {
                    "unique_id": f"{store}/{dept}",
                    "forecast_origin": pd.Timestamp(origin),
                    "target_date": pd.Timestamp(origin) + pd.Timedelta(weeks=k),
                    "horizon": k + 1,
                    "forecast": f,
                    "lo_80": f - 10,
                    "hi_80": f + 10,
                    "lo_95": f - 20,
                    "hi_95": f + 20,
                    "model_name": "m",
                    "model_version": "1",
                    "store": store,
                    "dept": dept,
                }
            )
    return pd.DataFrame(rows)


def _history(uid: str, start: str, n: int) -> pd.DataFrame:
    ds = pd.date_range(start, periods=n, freq="W-FRI")
    return pd.DataFrame({"unique_id": uid, "ds": ds, "y": np.arange(n, dtype=float)})


def test_series_keys_are_the_key_columns_in_numeric_order():
    """Key columns are what the forecasts table does not define; stores sort as numbers."""
    fc = _forecasts([("10", "1"), ("2", "7"), ("2", "3")])
    assert dd.key_names(fc) == ["store", "dept"]
    keys = dd.series_keys(fc)
    assert keys["unique_id"].tolist() == ["2/3", "2/7", "10/1"]
    assert dd.pick_series(keys, {"store": "2", "dept": "7"}) == "2/7"
    assert dd.pick_series(keys, {"store": "3", "dept": "7"}) is None


def test_series_view_splits_history_and_actuals_at_the_first_forecast_date():
    """History ends before the first target date (the origin); actuals start on it and sit
    beside the forecast of their date; dates without an actual show NaN."""
    fc = _forecasts([("1", "1")], origin="2012-01-06", h=3)
    hist = _history("1/1", "2011-12-02", 7)  # 5 weeks before the origin, 2 from it on
    view = dd.series_view(pd.concat([hist, _history("1/2", "2011-01-07", 60)]), fc, "1/1")
    assert view.history["ds"].max() < pd.Timestamp("2012-01-06") <= view.actuals["ds"].min()
    assert len(view.history) == 5 and len(view.actuals) == 2
    table = view.table
    assert table["actual"].tolist()[:2] == [5.0, 6.0] and np.isnan(table["actual"].iloc[2])
    assert table["forecast"].tolist() == fc["forecast"].tolist()
    lines, bands = dd.chart_frames(view)
    assert lines.groupby("what").size().to_dict() == {"actual": 2, "forecast": 3, "history": 5}
    assert list(bands.columns) == ["ds", "lo_80", "hi_80", "lo_95", "hi_95"]
    assert len(dd.series_view(_history("1/1", "2010-01-01", 200), fc, "1/1", 52).history) == 52


def test_series_view_without_history_still_has_the_forecast():
    """No history (unreadable source): the forecast and an empty actual column."""
    view = dd.series_view(None, _forecasts([("1", "1")]), "1/1")
    assert view.history.empty and view.actuals.empty
    assert len(view.table) == 3 and view.table["actual"].isna().all()


def test_store_summary_sums_each_store_over_the_horizon():
    """Totals per store over every target date; the series count of the store."""
    totals = pd.DataFrame(
        {
            "store": ["1", "1", "2", "2"],
            "target_date": pd.to_datetime(["2012-01-06", "2012-01-13"] * 2),
            "forecast": [1.0, 2.0, 10.0, 20.0],
            "n_series": [3, 3, 2, 2],
        }
    )
    out = dd.store_summary(totals).set_index("store")
    assert out["forecast_total"].to_dict() == {"1": 3.0, "2": 30.0}
    assert out["series"].to_dict() == {"1": 3, "2": 2}
    assert out.loc["1", "last_date"] == pd.Timestamp("2012-01-13")
    assert dd.store_summary(totals.iloc[:0]).empty
    assert set(dd.top_stores(totals, 1)["store"]) == {"2"}


def test_accuracy_by_origin_weights_horizons_by_their_rows():
    """Pooled MAE-like metrics are row-weighted means; RMSE pools squared errors."""
    acc = pd.DataFrame(
        {
            "model_name": "m",
            "model_version": ["1", "1", "2"],
            "forecast_origin": pd.to_datetime(["2012-01-06", "2012-01-06", "2012-01-06"]),
            "horizon": [1, 2, 1],
            "wmae": [10.0, 30.0, 5.0],
            "mae": [10.0, 30.0, 5.0],
            "rmse": [10.0, 30.0, 5.0],
            "bias": [1.0, -1.0, 0.0],
            "coverage_80": [1.0, 0.5, 0.8],
            "coverage_95": [1.0, 1.0, 0.9],
            "n": [1, 3, 4],
        }
    )
    out = dd.accuracy_by_origin(acc).set_index("model_version")
    assert out.loc["1", "wmae"] == pytest.approx(25.0)
    assert out.loc["1", "rmse"] == pytest.approx(np.sqrt((100 + 3 * 900) / 4))
    assert out.loc["1", "coverage_80"] == pytest.approx(0.625)
    assert out.loc["1", "n"] == 4 and out.loc["2", "wmae"] == 5.0
    assert dd.accuracy_by_origin(acc.iloc[:0]).empty


def _result(kind: str, drifted: list[str], columns: list[str]):
    from salesflow.monitor.drift_result import ColumnDrift, DriftResult

    cols = [
        ColumnDrift(c, "wasserstein", 0.1, 0.5 if c in drifted else 0.01, c in drifted)
        for c in columns
    ]
    share = len(drifted) / len(columns)
    return DriftResult(cols, len(drifted), share, share >= 0.5, 100, 50, kind)


def test_last_monitor_run_reads_the_newest_summary_the_monitor_wrote(tmp_path):
    """Of two runs' summaries (written by tasks.monitor) the later one is shown, with
    its verdicts and its existing reports; a broken summary is skipped."""
    from tasks.monitor import write_monitor_summary

    assert dd.last_monitor_run(tmp_path) is None
    old, new, bad = tmp_path / "2012-05-18_a", tmp_path / "2012-01-06_b", tmp_path / "c"
    feature = _result("feature", ["cpi", "temperature"], ["cpi", "temperature", "fuel"])
    target = _result("target", [], ["y"])
    write_monitor_summary(old, {"target": target}, {}, "2012-05-18", "run-1", "1")
    new.mkdir()
    (new / "feature-drift.html").write_text("<html></html>")
    paths = {"feature": new / "feature-drift.html", "target": new / "target-drift.html"}
    write_monitor_summary(
        new, {"feature": feature, "target": target}, paths, "2012-01-06", "run-2", "3"
    )
    bad.mkdir()
    (bad / "summary.json").write_text("{not json")
    os.utime(old / "summary.json")  # touched later: the order comes from written_at
    run = dd.last_monitor_run(tmp_path)
    assert run is not None and run.flow_run_id == "run-2" and run.champion_version == "3"
    assert run.data_date == "2012-01-06" and run.detected == ["feature"]
    assert run.reports() == {"feature": new / "feature-drift.html"}  # target's file missing
    table = run.table().set_index("check")
    assert (
        table.loc["feature", "drift"] == "DETECTED" and table.loc["target", "drift"] == "no drift"
    )
    assert table.loc["feature", "drifted"] == "2 of 3" and table.loc["feature", "share"] == "67 %"
    assert table.loc["feature", "columns"] == "cpi, temperature"
    saved = json.loads((new / "summary.json").read_text())
    assert saved["drift"]["feature"]["drifted_columns"] == ["cpi", "temperature"]


def test_audit_view_newest_first_and_row_errors():
    """Audit rows newest first; a batch's row errors as line, series, message."""
    from salesflow.serving.predict_inputs import RowError

    audit = pd.DataFrame(
        {
            "at": pd.to_datetime(["2026-01-01", "2026-02-01"], utc=True),
            "action": ["promote", "rollback"],
            "from_version": [None, "2"],
            "to_version": ["1", "1"],
            "reason": ["first", "worse"],
            "actor": ["cli", "monitor-flow"],
        }
    )
    assert dd.audit_view(audit)["action"].tolist() == ["rollback", "promote"]
    errs = dd.row_errors(
        [RowError(4, {"store": "9", "dept": "9"}, "unknown"), RowError(None, None, "x")]
    )
    assert errs.to_dict("records") == [
        {"line": "4", "series": "store=9, dept=9", "error": "unknown"},
        {"line": "–", "series": "–", "error": "x"},
    ]


def test_formatted_tables_show_text_a_planner_reads():
    """Floats with separators and fixed decimals, dates without midnight times, times when
    set, missing values as an en dash (a lone "-" would render as a Markdown bullet)."""
    from salesflow.serving.dashboard.common import formatted

    frame = pd.DataFrame(
        {
            "d": pd.to_datetime(["2012-01-06", None]),
            "t": pd.to_datetime(["2026-01-01 10:30", "2026-01-02 00:00"], utc=True),
            "x": [1234.5, np.nan],
            "s": ["a", None],
            "n": [1, 2],
        }
    )
    out = formatted(frame)
    assert out.to_dict("records") == [
        {"d": "2012-01-06", "t": "2026-01-01 10:30", "x": "1,234.50", "s": "a", "n": 1},
        {"d": "–", "t": "2026-01-02 00:00", "x": "–", "s": "–", "n": 2},
    ]


def test_streamlit_command_passes_the_env_after_the_double_dash():
    """The dashboard runs headless on the given host and port; the env goes to the script."""
    from salesflow.serving.cli_dashboard import APP, streamlit_argv

    argv = streamlit_argv("rossmann", 8600, "127.0.0.1")
    assert argv[1:5] == ["-m", "streamlit", "run", str(APP)] and APP.is_file()
    opts = dict(zip(argv[5 : argv.index("--")][::2], argv[5 : argv.index("--")][1::2], strict=True))
    assert opts["--server.headless"] == "true" and opts["--server.port"] == "8600"
    assert opts["--server.address"] == "127.0.0.1"
    assert argv[argv.index("--") + 1 :] == ["--env", "rossmann"]


def test_bad_port_is_one_line_before_streamlit_starts(capsys):
    """serve and dashboard refuse a port outside 1-65535 as a usage error (exit 2)."""
    from salesflow.commands.cli import main

    for command in ("serve", "dashboard"):
        assert main([command, "--port", "99999"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"salesflow: argument --port: '99999' is not a port number (1-65535) "
            f"(see salesflow {command} --help)"
        ]
