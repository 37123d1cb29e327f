"""Backtest scoring: closed days left out, the weekly seasonal naive, per-origin rows."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pandas as pd
import pytest

from features.build import make_grid
from salesflow.config.settings_sections import SyntheticSection
from salesflow.data.schema import DATE, ID
from salesflow.data.synthetic import generate_sales
from salesflow.modelling.backtest import (
    BacktestResult,
    baseline_forecasts,
    prediction_columns,
    run_backtest,
)
from salesflow.modelling.metrics import bias, mae, rmse, rmspe, wmae

HORIZON = 14


class _StubForecaster:
    """A fast stand-in for GlobalForecaster: each series' mean of its last 7 actuals;
    with ``closes_sundays`` it emits ``closed`` (Sundays) and forecasts 0 there."""

    def __init__(self, closes_sundays: bool, weekly_season: int):
        self.horizon, self.min_train_history = HORIZON, 20
        self.spec = types.SimpleNamespace(season_length=28, weekly_season=weekly_season)
        self.closes_sundays = closes_sundays

    def fit(self, data, rows=None):  # GlobalForecaster.fit's signature
        self.level_ = data.history.groupby(ID)["y"].apply(lambda s: s.tail(7).mean())
        return self

    def predict(self, data, origin, with_baseline=False):
        dates = pd.date_range(origin, periods=self.horizon, freq=data.freq)
        out = pd.DataFrame(
            {
                ID: np.repeat(self.level_.index, self.horizon),
                "origin": pd.Timestamp(origin),
                DATE: np.tile(dates, len(self.level_)),
                "horizon": np.tile(np.arange(1, self.horizon + 1), len(self.level_)),
                "forecast": np.repeat(self.level_.to_numpy(), self.horizon),
            }
        )
        if self.closes_sundays:
            out["closed"] = out[DATE].dt.dayofweek == 6
            out.loc[out["closed"], "forecast"] = 0.0
        return out


@pytest.fixture(scope="module")
def daily_data():
    """Four synthetic daily series of 120 days."""
    return generate_sales(SyntheticSection(n_stores=2, n_depts=2, periods=120, freq="D"), 0)


def _backtest(data, closes_sundays: bool, weekly_season: int = 7) -> BacktestResult:
    make = lambda: _StubForecaster(closes_sundays, weekly_season)  # noqa: E731
    return run_backtest(data, make, n_origins=2, step=HORIZON)


def test_weekly_seasonal_naive_hand_example():
    """seasonal_naive_7 takes the same weekday of the last week before the origin; where
    that value is unknown it takes the naive value; season 364 is unknown here: naive."""
    dates = pd.date_range("2015-01-01", periods=30, freq="D")
    y = np.arange(30.0)
    y[15] = np.nan
    h = pd.DataFrame({"unique_id": "a", "ds": dates, "y": y, "is_holiday": False})
    grid = make_grid(h.dropna(), None, [], "D")
    b = baseline_forecasts(grid, 20, 10, 364, weekly_season=7)
    assert b["seasonal_naive_7"].tolist() == [13, 14, 19, 16, 17, 18, 19, 13, 14, 19]
    assert b["seasonal_naive"].tolist() == [19.0] * 10
    assert b["naive"].tolist() == [19.0] * 10


def test_weekly_data_gets_no_weekly_naive():
    """Without weekly_season (weekly data) the baselines' columns are unchanged."""
    dates = pd.date_range("2010-01-01", periods=60, freq="7D")
    h = pd.DataFrame({"unique_id": "a", "ds": dates, "y": np.arange(60.0), "is_holiday": False})
    b = baseline_forecasts(make_grid(h, None, [], "W-FRI"), 55, 3, 52)
    assert list(b.columns) == [ID, DATE, "horizon", "naive", "seasonal_naive"]
    assert prediction_columns(b.assign(forecast=0.0)) == ["forecast", "seasonal_naive", "naive"]


def test_backtest_keeps_closed_and_scores_open_days_only(daily_data):
    """run_backtest keeps the model's ``closed`` column; metrics count only open rows and
    equal the metric functions applied to them (closed rows would change them)."""
    bt = _backtest(daily_data, closes_sundays=True)
    f = bt.frame
    assert f["closed"].dtype == bool and f["closed"].any()
    assert (f.loc[f["closed"], "forecast"] == 0).all()
    ov = bt.overall()
    open_ = f[~f["closed"]]
    assert ov.loc["forecast", "n"] == len(open_)
    assert ov.loc["forecast", "wmae"] == pytest.approx(
        wmae(open_["y"], open_["forecast"], open_["is_holiday"], bt.holiday_weight)
    )
    assert ov.loc["forecast", "rmspe"] == pytest.approx(rmspe(open_["y"], open_["forecast"]))
    everything = BacktestResult(f.drop(columns="closed"), bt.holiday_weight).overall()
    assert everything.loc["forecast", "wmae"] != pytest.approx(ov.loc["forecast", "wmae"])
    assert bt.by("origin")["n"].sum() == len(open_) * len(bt.predictions)
    assert bt.metrics()["model_n"] == len(open_)


def test_daily_backtest_scores_the_weekly_naive(daily_data):
    """With weekly_season 7 the frame and the scores carry seasonal_naive_7."""
    bt = _backtest(daily_data, closes_sundays=False)
    assert bt.predictions == ["forecast", "seasonal_naive", "seasonal_naive_7", "naive"]
    assert "seasonal_naive_7_wmae" in bt.metrics()
    assert np.isfinite(bt.frame["seasonal_naive_7"]).all()


def test_all_open_closed_column_changes_no_figure(small_data):
    """Weekly synthetic data: scores with an all-False ``closed`` column equal those without
    one, and equal the plain metric functions on every row (existing figures unchanged)."""
    bt = _backtest(small_data, closes_sundays=False, weekly_season=0)
    plain = bt.frame
    assert "closed" not in plain and bt.predictions == ["forecast", "seasonal_naive", "naive"]
    flagged = BacktestResult(plain.assign(closed=False), bt.holiday_weight)
    pd.testing.assert_frame_equal(flagged.overall(), bt.overall())
    pd.testing.assert_frame_equal(flagged.by("origin"), bt.by("origin"))
    assert flagged.metrics() == bt.metrics()
    ov, y, hol = bt.overall(), plain["y"], plain["is_holiday"]
    for m in ("forecast", "seasonal_naive", "naive"):
        p = plain[m]
        assert ov.loc[m, "wmae"] == pytest.approx(wmae(y, p, hol, bt.holiday_weight))
        assert ov.loc[m, "mae"] == pytest.approx(mae(y, p))
        assert ov.loc[m, "rmse"] == pytest.approx(rmse(y, p))
        assert ov.loc[m, "bias"] == pytest.approx(bias(y, p))


def test_origin_rows_are_plain_and_match_by_origin(daily_data):
    """One JSON-able dict per origin, oldest first, with the figures of by("origin")."""
    bt = _backtest(daily_data, closes_sundays=True)
    rows = bt.origin_rows()
    json.dumps(rows, allow_nan=False)
    assert [r["origin"] for r in rows] == bt.origins
    per = bt.by("origin").set_index(["origin", "model"])
    first = pd.Timestamp(rows[0]["origin"])
    f_wmae = per.loc[(first, "forecast"), "wmae"]
    n_wmae = per.loc[(first, "seasonal_naive"), "wmae"]
    assert rows[0]["forecast_wmae"] == pytest.approx(f_wmae)
    assert rows[0]["seasonal_naive_7_rmspe"] == pytest.approx(
        per.loc[(first, "seasonal_naive_7"), "rmspe"]
    )
    assert rows[0]["wmae_vs_seasonal_naive"] == pytest.approx(f_wmae / n_wmae)
    assert rows[0]["n"] == per.loc[(first, "forecast"), "n"]


def test_origin_rows_give_none_where_rmspe_is_undefined():
    """An origin whose open actuals are all <= 0 has RMSPE None (JSON null), not NaN."""
    frame = pd.DataFrame(
        {
            "origin": pd.Timestamp("2015-01-05"),
            "y": [0.0, -1.0],
            "is_holiday": False,
            "forecast": [1.0, 1.0],
            "seasonal_naive": [2.0, 0.0],
            "naive": [0.0, 0.0],
        }
    )
    (row,) = BacktestResult(frame, 5.0).origin_rows()
    assert row["forecast_rmspe"] is None and row["forecast_wmae"] == pytest.approx(1.5)
    assert math.isnan(BacktestResult(frame, 5.0).overall().loc["forecast", "rmspe"])


def _result(bt: BacktestResult) -> dict:
    ov = bt.overall()
    return {
        "model_name": "m",
        "version": "3",
        "alias": None,
        "origins": bt.origins,
        "metrics": {m: ov.loc[m].to_dict() for m in ov.index},
        "by_origin": bt.origin_rows(),
    }


def test_cli_prints_pooled_rmspe_and_one_row_per_origin(daily_data, capsys):
    """salesflow train's table: RMSPE per model (weekly naive included), then one row per
    origin with both WMAEs (thousands separators), their ratio and both RMSPEs."""
    from salesflow.commands.cli import _print_training

    bt = _backtest(daily_data, closes_sundays=True)
    _print_training(_result(bt))
    out = capsys.readouterr().out.splitlines()
    head = out.index(next(line for line in out if line.startswith("model")))
    assert out[head].split() == ["model", "WMAE", "MAE", "RMSE", "bias", "vs", "s.naive", "RMSPE"]
    sf = out[head + 1].split()
    assert sf[0] == "salesflow" and sf[-1] == f"{bt.overall().loc['forecast', 'rmspe']:.3f}"
    assert out[head + 3].startswith("s.naive 7")
    for r in bt.origin_rows():
        (line,) = [x for x in out if x.startswith(r["origin"])]
        assert line.split() == [
            r["origin"],
            f"{r['forecast_wmae']:,.1f}",
            f"{r['seasonal_naive_wmae']:,.1f}",
            f"{r['wmae_vs_seasonal_naive']:.3f}",
            f"{r['forecast_rmspe']:.3f}",
            f"{r['seasonal_naive_rmspe']:.3f}",
        ]


def test_markdown_tables_show_rmspe_and_origins(daily_data):
    """The backtest artifact: pooled table with an RMSPE column, then one row per origin."""
    from salesflow.modelling.report import metrics_table

    bt = _backtest(daily_data, closes_sundays=True)
    md = metrics_table(bt.overall(), bt.origin_rows())
    assert "| model | WMAE | MAE | RMSE | bias | RMSPE | WMAE / seasonal naive |" in md
    assert "| seasonal naive (7) |" in md
    for r in bt.origin_rows():
        assert f"| {r['origin']} | {r['forecast_wmae']:,.2f} |" in md
    assert "| origin |" not in metrics_table(bt.overall())


def test_text_covariates_do_not_reach_the_baselines(daily_data):
    """A categorical covariate kept as text (StateHoliday's letters) does not break the
    backtest: the baselines read only the target."""
    from dataclasses import replace

    h = daily_data.history.assign(state_holiday="a")
    data = replace(daily_data, history=h, covariates=[*daily_data.covariates, "state_holiday"])
    assert len(_backtest(data, closes_sundays=True).overall()) == 4
