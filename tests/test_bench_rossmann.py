"""The Rossmann benchmark's data preparation, baselines and scoring on tiny daily frames."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _rossmann as ros  # noqa: E402


def _train(days: int = 400, stores: tuple[int, ...] = (1, 2)) -> pd.DataFrame:
    """Sales = 100 * store + 10 * weekday (+50 on promo days), closed on Sundays."""
    dates = pd.date_range("2014-01-01", periods=days, freq="D")
    parts = []
    for s in stores:
        dow = dates.dayofweek + 1
        promo = (np.arange(days) // 7) % 2
        open_ = (dow != 7).astype(int)
        sales = (100 * s + 10 * dow + 50 * promo) * open_
        parts.append(
            pd.DataFrame(
                {
                    "Store": s,
                    "Date": dates,
                    "DayOfWeek": dow,
                    "Sales": sales,
                    "Open": open_,
                    "Promo": promo,
                    "StateHoliday": "0",
                    "SchoolHoliday": 0,
                    "observed": True,
                }
            )  # fmt: skip
        )
    return pd.concat(parts, ignore_index=True)


def test_daily_panel_fills_a_missing_day_from_364_days_earlier():
    """A missing (store, day) gets the store's row 364 days before, flagged unobserved."""
    train = _train()
    day = pd.Timestamp("2014-12-31")
    gone = (train["Store"] == 2) & (train["Date"] == day)
    panel = ros.daily_panel(train[~gone])
    row = panel[(panel["Store"] == 2) & (panel["Date"] == day)].iloc[0]
    year_ago = train[(train["Store"] == 2) & (train["Date"] == day - pd.Timedelta(days=364))]
    assert not row["observed"]
    assert row["Sales"] == year_ago["Sales"].iloc[0]
    assert panel["observed"].sum() == len(train) - 1


def test_seasonal_naive_7_skips_a_closed_day():
    """The latest same weekday with the store open is used, not a closed holiday."""
    panel = ros.daily_panel(_train())
    origin = "2015-01-31"  # a Saturday
    hist, target = ros.history(panel, origin), ros.window(panel, origin)
    last_sat = (hist["Date"] == "2015-01-24") & (hist["Store"] == 1)
    hist.loc[last_sat, ["Open", "Sales"]] = 0
    fc = ros.seasonal_naive_7(hist, target)
    sat = (target["Store"] == 1) & (target["DayOfWeek"] == 6)
    expected = hist[(hist["Date"] == "2015-01-17") & (hist["Store"] == 1)]["Sales"].iloc[0]
    assert (fc[sat] == expected).all()


def test_median_13w_splits_by_promo():
    """The store x weekday x promo median reproduces the exact promo lift of the data."""
    panel = ros.daily_panel(_train())
    origin = "2015-01-31"
    target = ros.window(panel, origin)
    fc = ros.median_13w(ros.history(panel, origin), target)
    open_ = target["Open"] == 1
    assert np.allclose(fc[open_], target.loc[open_, "Sales"])


def test_scores_use_open_days_with_sales_and_closed_days_are_zero(tmp_path):
    """Closed days are forecast 0 and never scored; RMSPE matches a hand computation."""
    panel = ros.daily_panel(_train())
    origin = "2015-01-31"
    target = ros.window(panel, origin)
    fc = ros.closed_to_zero(target, target["Sales"].to_numpy(dtype=float) * 1.1)
    assert (fc[target["Open"].to_numpy() == 0] == 0).all()
    panel.to_parquet(tmp_path / "panel.parquet")
    frame = target[["Store", "Date"]].assign(forecast=fc)
    frame.to_parquet(ros.frame_path(tmp_path, "median_13w", origin))
    rows = ros.scored_rows(panel, [origin])
    assert len(rows) == int(((target["Open"] == 1) & (target["Sales"] > 0)).sum())
    scored = ros.score_method(tmp_path, rows, "median_13w")
    assert scored["rmspe"] == pytest.approx(0.1)
    assert scored["mae"] == pytest.approx(0.1 * rows["y"].mean())
