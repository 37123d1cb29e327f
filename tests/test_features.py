"""Features: calendar facts, grid building, and the no-leak property."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.build import FeatureSpec, feature_names, make_grid, origin_features
from features.calendar import holiday_calendar, is_holiday_period

SPEC = FeatureSpec(season_length=52, recent_lags=3, rolling_windows=(4, 13))
COVS = ["temperature", "cpi"]


def _panel(seed: int, n_series: int = 3, periods: int = 130) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2010-02-05", periods=periods, freq="7D")
    rows = []
    for i in range(n_series):
        start = int(rng.integers(0, 20))
        for d in dates[start:]:
            rows.append((f"s{i}", d, float(rng.normal(100, 20)), rng.normal(60), rng.normal(200)))
    h = pd.DataFrame(rows, columns=["unique_id", "ds", "y", "temperature", "cpi"])
    h["is_holiday"] = is_holiday_period(h["ds"], "W-FRI")
    fut_dates = pd.date_range(dates[-1] + pd.Timedelta(days=7), periods=10, freq="7D")
    fut = pd.DataFrame(
        [(f"s{i}", d, 50.0, 210.0) for i in range(n_series) for d in fut_dates],
        columns=["unique_id", "ds", "temperature", "cpi"],
    )
    return h, fut


@pytest.mark.parametrize(
    ("day", "holiday"),
    [
        ("2010-02-12", "super_bowl"),
        ("2011-09-09", "labor_day"),
        ("2012-11-23", "thanksgiving"),
        ("2010-12-31", "christmas"),
        ("2022-02-18", "super_bowl"),  # second Sunday of February from 2022
    ],
)
def test_holiday_weeks_match_walmart(day, holiday):
    """Holiday weeks (W-FRI) fall on the dates the Walmart files flag."""
    cal = holiday_calendar(pd.Timestamp(day) - pd.Timedelta(days=3), pd.Timestamp(day), "W-FRI")
    assert cal.loc[cal.ds == pd.Timestamp(day), "holiday"].tolist() == [holiday]


def test_origin_features_columns_and_rows():
    """One row per series and horizon, with the documented feature columns."""
    h, fut = _panel(0)
    grid = make_grid(h, fut, COVS, "W-FRI", extend=5)
    t = len(grid.dates) - 12
    f = origin_features(grid, t, 5, SPEC)
    assert len(f) == 3 * 5
    assert list(f.columns[5:]) == feature_names(SPEC, COVS)
    assert (f["ds"] - f["origin"]).dt.days.tolist()[:5] == [0, 7, 14, 21, 28]


def test_seasonal_lag_is_last_year_value():
    """seas_lag is the target one season before the target date, divided by the scale."""
    h, fut = _panel(1, n_series=1)
    grid = make_grid(h, fut, COVS, "W-FRI")
    t = 100
    f = origin_features(grid, t, 3, SPEC)
    expect = grid.y[0, t + 2 - 52] / f["scale"].iloc[2]
    assert f["seas_lag"].iloc[2] == pytest.approx(expect, rel=1e-6)


def test_series_without_history_before_origin_is_left_out():
    """A series that starts after the origin gets no feature rows."""
    h, fut = _panel(2)
    late = h[h.unique_id == "s0"].assign(unique_id="late")
    late = late[late.ds >= late.ds.max() - pd.Timedelta(weeks=4)]
    grid = make_grid(pd.concat([h, late]), fut, COVS, "W-FRI")
    t = grid.index_of(late.ds.min())
    assert "late" not in set(origin_features(grid, t, 4, SPEC)["unique_id"])
    assert "late" in set(origin_features(grid, t + 1, 4, SPEC)["unique_id"])


def _features_at(h, fut, origin_idx, spec):
    grid = make_grid(h, fut, COVS, "W-FRI", extend=10)
    return origin_features(grid, origin_idx, 8, spec).drop(columns=["y"])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    back=st.integers(1, 60),
    noise=st.floats(-1e4, 1e4, allow_nan=False),
    strict=st.booleans(),
)
def test_no_leak_changing_future_changes_no_feature(seed, back, noise, strict):
    """Changing any target at or after origin T (and, in strict mode, any covariate too)
    changes no feature at origin T."""
    spec = FeatureSpec(52, 3, (4, 13), future_covariates=not strict)
    h, fut = _panel(seed)
    dates = pd.date_range(h.ds.min(), h.ds.max(), freq="7D")
    t = len(dates) - back
    origin = dates[t]
    before = _features_at(h, fut, t, spec)
    h2, fut2 = h.copy(), fut.copy()
    later = h2.ds >= origin
    h2.loc[later, "y"] = h2.loc[later, "y"] * -3 + noise
    if strict:
        h2.loc[later, COVS] = h2.loc[later, COVS] + noise + 1
        fut2[COVS] = fut2[COVS] * 7 + 1
    after = _features_at(h2, fut2, t, spec)
    pd.testing.assert_frame_equal(before, after)


def test_known_covariates_of_target_date_are_used():
    """In the default mode the target date's covariates are features (known in advance)."""
    h, fut = _panel(3)
    t = len(pd.date_range(h.ds.min(), h.ds.max(), freq="7D")) - 5
    base = _features_at(h, fut, t, SPEC)
    h2 = h.copy()
    h2.loc[h2.ds >= h2.ds.max() - pd.Timedelta(weeks=3), "temperature"] += 50
    changed = _features_at(h2, fut, t, SPEC)
    diff = [c for c in base.columns if not base[c].equals(changed[c])]
    assert diff == ["cov_temperature", "cov_temperature_yoy"]
