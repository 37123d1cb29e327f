"""Features: calendar facts, grid building, and the no-leak property."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.build import AUX_COLUMNS, FeatureSpec, feature_names, make_grid, origin_features
from features.calendar import easter, holiday_calendar, is_holiday_period
from features.seasonal import denoised_history, season_source, two_seasons_ago

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
    assert list(f.columns[5:]) == [*feature_names(SPEC, COVS), *AUX_COLUMNS]
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


def _features_at(h, fut, origin_idx, spec, one_group=False):
    grid = make_grid(h, fut, COVS, "W-FRI", extend=10)
    if one_group:  # every series in one group: the SVD denoising is active
        grid = replace(grid, group=np.zeros(len(grid.ids), dtype=int))
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
    changes no feature at origin T, the group-denoised baseline included (8 series in
    one group, SVD rank 3, blended with two seasons back)."""
    spec = FeatureSpec(
        52, 3, (4, 13), future_covariates=not strict, denoise_rank=3, two_season_weight=0.25
    )
    h, fut = _panel(seed, n_series=8, periods=180)  # every origin has two seasons before it
    dates = pd.date_range(h.ds.min(), h.ds.max(), freq="7D")
    t = len(dates) - back
    origin = dates[t]
    before = _features_at(h, fut, t, spec, one_group=True)
    h2, fut2 = h.copy(), fut.copy()
    later = h2.ds >= origin
    h2.loc[later, "y"] = h2.loc[later, "y"] * -3 + noise
    if strict:
        h2.loc[later, COVS] = h2.loc[later, COVS] + noise + 1
        fut2[COVS] = fut2[COVS] * 7 + 1
    after = _features_at(h2, fut2, t, spec, one_group=True)
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


def test_easter_dates():
    """Western Easter Sunday, including the years of the Walmart data."""
    got = [str(easter(y)) for y in (2010, 2011, 2012, 2013, 2024, 2025)]
    assert got == [
        "2010-04-04", "2011-04-24", "2012-04-08", "2013-03-31", "2024-03-31", "2025-04-20"
    ]  # fmt: skip


def test_season_source_follows_easter():
    """Near Easter, "last season" is the week at the same offset from last year's Easter
    week (2012-04-13 -> 2011-04-29, the Easter weeks); elsewhere it is 52 weeks back."""
    h, fut = _panel(0, n_series=1, periods=160)
    grid = make_grid(h, fut, COVS, "W-FRI")
    targets = pd.DatetimeIndex(["2012-04-06", "2012-04-13", "2012-07-06", "2012-02-10"])
    j = grid.dates.get_indexer(targets)
    src = grid.dates[season_source(grid, j, 52, targets)]
    assert [str(d.date()) for d in src] == ["2011-04-22", "2011-04-29", "2011-07-08", "2011-02-11"]
    # A season that is not a year is never realigned.
    assert (season_source(grid, j, 4, targets) == j - 4).all()


def _shared_shape_grid(n_series: int, noise: float, seed: int = 0):
    """``n_series`` series = loading x one seasonal shape + noise, one group; the truth too."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2010-02-05", periods=110, freq="7D")
    shape = 100 + 40 * np.sin(np.arange(len(dates)) * 2 * np.pi / 52)
    truth = rng.uniform(0.5, 3.0, (n_series, 1)) * shape
    y = truth + rng.normal(0, noise, truth.shape)
    h = pd.DataFrame(
        {
            "unique_id": np.repeat([f"s{i}" for i in range(n_series)], len(dates)),
            "ds": np.tile(dates, n_series),
            "y": y.ravel(),
            "is_holiday": False,
        }
    )
    h = h.drop(index=[3, 4])  # two missing weeks of s0
    grid = make_grid(h, None, [], "W-FRI")
    return replace(grid, group=np.zeros(n_series, dtype=int)), truth


def test_denoising_recovers_the_shared_shape():
    """Rank-1 SVD of a group sharing one shape is closer to the truth than the raw values;
    missing weeks stay missing; only the weeks before t are returned."""
    grid, truth = _shared_shape_grid(10, noise=15.0)
    t = 100
    out = denoised_history(grid, t, rank=1)
    assert out.shape == (10, t)
    assert np.isnan(out[0, 3]) and np.isnan(out[0, 4])
    ok = ~np.isnan(out)
    raw_err = np.abs(grid.y[:, :t] - truth[:, :t])[ok].mean()
    svd_err = np.abs(out - truth[:, :t])[ok].mean()
    assert svd_err < 0.6 * raw_err


def test_denoising_leaves_small_groups_and_ungrouped_grids_raw():
    """A group of no more series than the rank, or a grid without groups, is left as is."""
    grid, _ = _shared_shape_grid(3, noise=15.0)
    raw = grid.y[:, :100]
    np.testing.assert_array_equal(denoised_history(grid, 100, rank=3), raw)
    np.testing.assert_array_equal(denoised_history(replace(grid, group=None), 100, 1), raw)
    np.testing.assert_array_equal(denoised_history(grid, 100, rank=0), raw)


def test_payday_and_covariate_change_features():
    """month_start_days counts the days 1-7 of a month in the week (target and source
    week); cov_<c>_yoy is the covariate minus its value in the source week."""
    h, fut = _panel(4, n_series=1, periods=130)
    grid = make_grid(h, fut, COVS, "W-FRI")
    t = grid.index_of("2012-03-02")
    f = origin_features(grid, t, 1, SPEC).iloc[0]
    assert f["month_start_days"] == 2  # 2012-02-25 .. 03-02
    assert f["month_start_days_src"] == 4  # 2011-02-26 .. 03-04
    src = grid.index_of("2011-03-04")
    expect = grid.cov[0, t, 0] - grid.cov[0, src, 0]
    assert f["cov_temperature_yoy"] == pytest.approx(expect, rel=1e-5)


def _growing_series(periods: int = 160, growth: float = 1.2) -> pd.DataFrame:
    """One series: a yearly shape times steady growth, so y[k] = growth x y[k - 52]."""
    k = np.arange(periods)
    y = 100 * (1 + 0.3 * np.sin(k * 2 * np.pi / 52)) * growth ** (k / 52)
    return pd.DataFrame(
        {
            "unique_id": "s0",
            "ds": pd.date_range("2010-02-05", periods=periods, freq="7D"),
            "y": y,
            "is_holiday": False,
        }
    )


def test_two_seasons_back_is_carried_to_last_seasons_level():
    """With steady growth, two seasons back times the growth between the two past seasons
    is exactly last season, so blending it in leaves the baseline unchanged; a spike two
    seasons back moves the baseline by the blend weight x the carried spike."""
    grid = make_grid(_growing_series(), None, [], "W-FRI")
    t = grid.index_of("2012-08-03")  # targets Aug-Sep 2012: far from Easter
    one = FeatureSpec(52, 3, (4, 13), denoise_rank=0)
    two = replace(one, two_season_weight=0.25)
    base_one = origin_features(grid, t, 6, one)["seas_base"].to_numpy()
    base_two = origin_features(grid, t, 6, two)["seas_base"].to_numpy()
    np.testing.assert_allclose(base_two, base_one, rtol=1e-5)

    src = t + np.arange(6) - 52
    carried = two_seasons_ago(grid.y, src, src - 52, t)
    np.testing.assert_allclose(carried, grid.y[:, src], rtol=1e-9)
    spiked = grid.y.copy()
    spiked[0, src[2] - 52] *= 3  # two seasons before the third target
    moved = two_seasons_ago(spiked, src, src - 52, t)
    # x3, less the spike's own weight in the growth window's denominator (1 of 9 weeks).
    assert 2.0 * grid.y[0, src[2]] < moved[0, 2] < 3.0 * grid.y[0, src[2]]
    # The spike also sits in the growth window of its neighbours, which move down a bit.
    assert (moved[0, [1, 3]] < grid.y[0, src[[1, 3]]]).all()


def test_two_seasons_back_needs_enough_known_pairs():
    """Where two seasons back is not in the history, or too few weeks around it are known
    to measure the growth, the value is NaN and the baseline is last season's alone."""
    grid = make_grid(_growing_series(periods=110), None, [], "W-FRI")
    t = 96  # two seasons back of targets 96..101 are weeks -8..-3
    src = t + np.arange(6) - 52
    assert np.isnan(two_seasons_ago(grid.y, src, src - 52, t)).all()

    sparse = _growing_series(periods=112)
    sparse = sparse.drop(index=[1, 2, 3, 4, 6, 7, 8, 9])  # week 5 known, its neighbours not
    grid = make_grid(sparse, None, [], "W-FRI")
    t = 105
    src = t + np.arange(6) - 52  # two seasons back: weeks 1..6
    assert not np.isnan(grid.y[0, 5])
    assert np.isnan(two_seasons_ago(grid.y, src, src - 52, t)).all()
    spec = FeatureSpec(52, 3, (4, 13), denoise_rank=0)
    base = origin_features(grid, t, 6, spec)["seas_base"].to_numpy()
    blended = origin_features(grid, t, 6, replace(spec, two_season_weight=0.5))
    np.testing.assert_array_equal(blended["seas_base"].to_numpy(), base)
