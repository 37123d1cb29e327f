"""Realized accuracy: joining actuals, scoring per origin and horizon, storing, judging."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pandas as pd
import pytest

from salesflow.config.settings import MonitorSection
from salesflow.monitor import monitoring as mon
from salesflow.storage import warehouse as wh
from tests.pg import PG_URL, drop_table, postgres_or_skip

ORIGIN = pd.Timestamp("2012-01-06")


def _forecasts() -> pd.DataFrame:
    """Two series x horizons 1-2 (plus a horizon 3 with no actual yet), warehouse layout."""
    return pd.DataFrame(
        {
            "unique_id": ["1/1", "1/1", "1/2", "1/2", "1/1"],
            "forecast_origin": ORIGIN,
            "target_date": pd.to_datetime(
                ["2012-01-13", "2012-01-20", "2012-01-13", "2012-01-20", "2012-01-27"]
            ),
            "horizon": [1, 2, 1, 2, 3],
            "forecast": [110.0, 190.0, 50.0, 70.0, 1.0],
            "lo_80": [105.0, 180.0, 40.0, np.nan, 0.0],
            "hi_80": [115.0, 210.0, 60.0, np.nan, 2.0],
            "lo_95": [90.0, 170.0, 30.0, 50.0, 0.0],
            "hi_95": [130.0, 220.0, 70.0, 65.0, 2.0],
            "model_name": "salesflow-forecaster",
            "model_version": "3",
        }
    )


def _history() -> pd.DataFrame:
    """Actuals for weeks 1-2 of both series (13 Jan is a holiday week)."""
    return pd.DataFrame(
        {
            "unique_id": ["1/1", "1/1", "1/2", "1/2"],
            "ds": pd.to_datetime(["2012-01-13", "2012-01-20", "2012-01-13", "2012-01-20"]),
            "y": [100.0, 200.0, 55.0, 60.0],
            "is_holiday": [True, False, True, False],
        }
    )


@pytest.fixture()
def joined() -> pd.DataFrame:
    return mon.join_actuals(_forecasts(), _history())


def test_join_keeps_only_rows_with_an_actual(joined):
    """Forecasts without an actual (horizon 3) are dropped; y and is_holiday are attached."""
    assert len(joined) == 4 and set(joined["horizon"]) == {1, 2}
    row = joined[(joined["unique_id"] == "1/1") & (joined["horizon"] == 1)].iloc[0]
    assert (row["y"], bool(row["is_holiday"]), row["forecast"]) == (100.0, True, 110.0)


def test_join_drops_null_actuals_and_unknown_series():
    """Null actuals and series absent from the history do not join."""
    history = _history()
    history.loc[3, "y"] = np.nan
    forecasts = pd.concat([_forecasts(), _forecasts().assign(unique_id="9/9")])
    joined = mon.join_actuals(forecasts, history)
    assert len(joined) == 3 and set(joined["unique_id"]) == {"1/1", "1/2"}


def test_join_requires_columns():
    """A forecasts frame without target_date is a ValueError naming it."""
    with pytest.raises(ValueError, match="target_date"):
        mon.join_actuals(_forecasts().drop(columns="target_date"), _history())


def test_realized_accuracy_hand_example(joined):
    """Per-horizon WMAE (holiday x5), MAE, RMSE, bias and coverage match a hand computation."""
    acc = mon.realized_accuracy(joined).set_index("horizon")
    h1, h2 = acc.loc[1], acc.loc[2]
    # h1: errors +10 (holiday) and -5 (holiday) -> both weight 5
    assert h1["wmae"] == pytest.approx(7.5) and h1["mae"] == pytest.approx(7.5)
    assert h1["rmse"] == pytest.approx(math.sqrt((100 + 25) / 2))
    assert h1["bias"] == pytest.approx(2.5)
    assert h1["coverage_80"] == 0.5  # 100 outside [105, 115], 55 inside [40, 60]
    assert h1["coverage_95"] == 1.0
    # h2: errors -10 and +10, no holiday; 1/2 has no 80 % bounds, 60 is inside [50, 65]
    assert (h2["wmae"], h2["bias"], h2["coverage_80"], h2["coverage_95"]) == (10, 0, 1.0, 1.0)
    assert list(acc["n"]) == [2, 2]


def test_realized_accuracy_columns_and_keys(joined):
    """One row per (model_name, model_version, forecast_origin, horizon) with every metric."""
    acc = mon.realized_accuracy(joined)
    assert list(acc.columns) == [*mon.ACCURACY_KEY, *mon.ACCURACY_METRICS, "n"]
    assert not acc.duplicated(list(mon.ACCURACY_KEY)).any()


def test_coverage_nan_without_bounds(joined):
    """Coverage is NaN when the interval columns are absent."""
    acc = mon.realized_accuracy(joined.drop(columns=["lo_95", "hi_95"]))
    assert acc["coverage_95"].isna().all() and acc["coverage_80"].notna().all()


def test_summarize_accuracy_per_version(joined):
    """The overall summary per model version pools all horizons (holiday-weighted WMAE)."""
    both = pd.concat([joined, joined.assign(model_version="4", forecast=joined["y"])])
    summary = mon.summarize_accuracy(both)
    assert set(summary) == {"3", "4"}
    assert summary["3"]["wmae"] == pytest.approx((5 * 10 + 10 + 5 * 5 + 10) / 12)
    assert summary["3"]["coverage_80"] == pytest.approx(2 / 3) and summary["3"]["n"] == 4
    assert summary["4"]["wmae"] == 0.0
    no_bounds = mon.summarize_accuracy(joined.drop(columns=["lo_95", "hi_95"]))
    assert no_bounds["3"]["coverage_95"] is None


def test_empty_join_gives_empty_results():
    """No actuals yet: an empty accuracy frame and an empty summary."""
    joined = mon.join_actuals(_forecasts(), _history().iloc[0:0])
    assert mon.realized_accuracy(joined).empty and mon.summarize_accuracy(joined) == {}


@pytest.mark.parametrize(
    ("realized", "backtest", "factor", "expected"),
    [
        (150.0, 100.0, 1.5, False),
        (150.1, 100.0, 1.5, True),
        (120.0, 100.0, 1.1, True),
        (1.0, 0.0, 1.5, True),
    ],
)
def test_is_degraded(realized, backtest, factor, expected):
    """Degraded when realized WMAE > max_wmae_vs_backtest x backtest WMAE."""
    cfg = MonitorSection(max_wmae_vs_backtest=factor)
    assert mon.is_degraded(realized, backtest, cfg) is expected


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf])
def test_is_degraded_rejects_bad_numbers(bad):
    """A NaN, negative or infinite WMAE cannot be judged."""
    with pytest.raises(ValueError, match="finite"):
        mon.is_degraded(bad, 100.0, MonitorSection())


def test_accuracy_table_shape():
    """The table's key is (model_name, model_version, forecast_origin, horizon)."""
    table = mon.accuracy_table("acc_x")
    assert tuple(table.primary_key.columns.keys()) == mon.ACCURACY_KEY
    assert {"computed_at", "n", *mon.ACCURACY_METRICS} <= set(table.c.keys())
    with pytest.raises(ValueError, match="not a valid table"):
        mon.accuracy_table("bad name")


def _write_twice(url: str, table: str, joined: pd.DataFrame) -> None:
    acc = mon.realized_accuracy(joined)
    first = mon.write_accuracy(url, acc, table)
    again = mon.write_accuracy(url, acc.assign(wmae=acc["wmae"] + 1), table)
    assert (first.rows_inserted, again.rows_inserted, again.rows_updated) == (2, 0, 2)
    stored = wh.read_frame(url, mon.accuracy_table(table)).sort_values("horizon")
    assert len(stored) == 2
    assert list(stored["wmae"]) == pytest.approx(list(acc["wmae"] + 1))
    assert stored["coverage_80"].tolist() == [0.5, 1.0]


def test_write_accuracy_idempotent_sqlite(tmp_path, joined):
    """Writing the same accuracy twice on SQLite keeps one row per key, updated in place."""
    _write_twice(f"sqlite:///{tmp_path / 'wh.db'}", "forecast_accuracy", joined)


@pytest.mark.postgres
def test_write_accuracy_idempotent_postgres(joined):
    """The same upsert on PostgreSQL (skipped when unreachable, unless CI=true)."""
    postgres_or_skip()
    table = f"forecast_accuracy_t{uuid.uuid4().hex[:12]}"
    try:
        _write_twice(PG_URL, table, joined)
    finally:
        drop_table(PG_URL, table)
