"""Daily data: frequency defaults, weekly profile, closed days, holiday codes, gap fallback."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.build import FeatureSpec, make_grid, origin_features
from features.daily import closure_distances, weekly_profile
from features.holidays import HolidaySpec, holiday_flags
from salesflow.config.settings import load_settings
from salesflow.data.schema import SalesData
from salesflow.modelling.model import GlobalForecaster, seasonal_base

DAILY = FeatureSpec(
    season_length=364,
    recent_lags=7,
    rolling_windows=(7, 28),
    level_window=56,
    weekly_season=7,
    profile_match=("promo",),
    holidays=HolidaySpec("none", "DE"),
)


def _daily(n_stores: int = 3, days: int = 420, seed: int = 0, future: int = 0) -> SalesData:
    """Stores closed on Sundays and on state holidays (code "a"), promo every other week."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2014-01-01", periods=days + future, freq="D")
    rows = []
    for s in range(1, n_stores + 1):
        level = 1000.0 * s
        for k, d in enumerate(dates):
            promo = float((d.isocalendar().week % 2) == 0 and d.dayofweek < 5)
            hol = "a" if (d.month, d.day) in {(1, 1), (5, 1), (10, 3), (12, 25)} else "0"
            is_open = float(d.dayofweek != 6 and hol == "0")
            y = level * (1 + 0.1 * d.dayofweek) * (1.3 if promo else 1.0) * rng.uniform(0.95, 1.05)
            rows.append((str(s), d, y * is_open if k < days else np.nan, hol, is_open, promo))
    frame = pd.DataFrame(rows, columns=["store", "ds", "y", "state_holiday", "open", "promo"])
    frame.insert(0, "unique_id", frame["store"])
    frame["is_holiday"] = frame["state_holiday"] != "0"
    frame = frame[["unique_id", "store", "ds", "y", "is_holiday", "open", "promo", "state_holiday"]]
    hist, fut = frame[frame["y"].notna()], frame[frame["y"].isna()].drop(columns="y")
    return SalesData(
        history=hist.reset_index(drop=True),
        future=fut.reset_index(drop=True),
        keys=["store"],
        covariates=["open", "promo"],
        freq="D",
        source="test",
        categorical=["state_holiday"],
        known_ahead=["open", "promo", "state_holiday"],
        open="open",
    )


def _model(**kw) -> GlobalForecaster:
    params = {"n_estimators": 20, "max_depth": 3, "n_jobs": 1, "random_state": 0}
    kw = {"native_categorical": True, **kw}
    return GlobalForecaster(
        horizon=14, spec=DAILY, params=params, min_train_history=370, origin_stride=9, **kw
    )


def test_season_lengths_follow_the_frequency():
    """Daily data gets seasons 7 and 364, weekly data 52 (and no weekly season)."""
    daily = load_settings("dev", data={"freq": "D"}).features
    weekly = load_settings("dev").features
    assert (daily.season_length, daily.weekly_season) == (364, 7)
    assert daily.rolling_windows == [7, 28, 91, 364]
    assert (weekly.season_length, weekly.weekly_season) == (52, 0)
    assert weekly.rolling_windows == [4, 13, 52]


def test_explicit_season_length_is_kept():
    """A season set in the configuration wins over the frequency's default."""
    f = load_settings("dev", data={"freq": "D"}, features={"season_length": 365}).features
    assert (f.season_length, f.weekly_season) == (365, 7)


def test_unknown_holiday_country_is_a_settings_error():
    """A country the holidays library does not know is refused with its name."""
    with pytest.raises(Exception, match="'XX'"):
        load_settings("dev", features={"holidays": {"country": "XX"}})


def test_weekly_profile_reads_only_same_weekdays_before_the_origin():
    """The profile of a target day is the median of the same weekday before t, matched."""
    y = np.arange(60, dtype=float)[None, :]
    promo = np.zeros((1, 60))
    promo[0, [45, 38, 31]] = 1
    promo[0, 52] = 1  # the target (index 52, weekday of 45, 38, ...) is a promo day
    t, j = 50, np.array([50, 52])
    out = weekly_profile(y, t, j, 7, 4, [promo])
    assert out["prof_last"][0].tolist() == [43.0, 45.0]
    assert out["prof_med"][0, 1] == np.median([45, 38, 31, 24])
    assert out["prof_match_med"][0, 1] == 38.0 and out["prof_match_n"][0, 1] == 3
    assert out["prof_base"][0, 1] == 38.0  # 3 matching promo days
    y2 = y.copy()
    y2[0, t:] = -1.0  # nothing at or after t may matter
    again = weekly_profile(y2, t, j, 7, 4, [promo])
    assert all(np.array_equal(again[k], v, equal_nan=True) for k, v in out.items())


def test_closure_distances_count_days_to_and_since_a_closed_day():
    """Days to the next closed day and since the last one, capped, NaN past the grid."""
    open_ = np.ones((1, 20))
    open_[0, [5, 12]] = 0
    out = closure_distances(open_, np.array([3, 5, 8, 25]), cap=30)
    assert out["days_to_closed"][0, :3].tolist() == [2, 0, 4]
    assert out["days_since_closed"][0, :3].tolist() == [30, 0, 3]
    assert np.isnan(out["days_to_closed"][0, 3])


def test_country_calendar_flags_german_holidays():
    """features.holidays.country DE flags German Unity Day, not Thanksgiving."""
    dates = pd.DatetimeIndex(["2015-10-03", "2015-11-26", "2015-10-04"])
    assert holiday_flags(dates, "D", HolidaySpec("none", "DE")).tolist() == [True, False, False]
    assert holiday_flags(dates, "D", HolidaySpec("none", None)).tolist() == [False] * 3


def test_closed_days_leave_the_history_and_forecast_exactly_zero():
    """Closed days are missing to the features; their forecasts and bounds are exactly 0."""
    data = _daily(future=14)
    grid = make_grid(data.history, None, ["open", "promo"], "D", open_column="open")
    sundays = grid.dates.dayofweek == 6
    assert np.isnan(grid.y[:, sundays]).all()
    model = _model().fit(data)
    bt = model.predict(data.as_of(data.history["ds"].max() - pd.Timedelta(days=28)))
    model.set_intervals(bt.assign(y=bt["forecast"] * 1.05))
    pred = model.predict(data)
    closed = pred["closed"].to_numpy()
    assert closed.sum() == 3 * 2  # two Sundays in 14 days, three stores
    bounds = ["forecast", "lo_80", "hi_80", "lo_95", "hi_95"]
    assert (pred.loc[closed, bounds] == 0).all().all()
    assert (pred.loc[~closed, "forecast"] > 0).all()
    assert (pred[bounds] >= 0).all().all()


def test_holiday_codes_are_categorical_features():
    """A categorical covariate is coded from its training categories and typed 'c'."""
    model = _model().fit(_daily())
    assert model.cov_categories_ == {"state_holiday": ["0", "a"]}
    types = dict(zip(model.feature_names_, model.model_.get_booster().feature_types, strict=True))
    assert types["cov_state_holiday"] == "c"
    assert "cov_state_holiday_yoy" not in types
    assert types["cov_promo"] == "q"
    plain = _model(native_categorical=False).fit(_daily())
    assert set(plain.model_.get_booster().feature_types) == {"q"}  # ordinal codes


def test_unknown_category_warns_and_still_forecasts(caplog):
    """A holiday code never seen in training is a warning and a missing value, not a crash."""
    data = _daily(future=14)
    model = _model().fit(data)
    fut = data.future.copy()
    fut.loc[fut.index[:3], "state_holiday"] = "c"
    with caplog.at_level(logging.WARNING, logger="salesflow.model"):
        pred = model.predict(replace(data, future=fut))
    assert "'state_holiday'" in caplog.text and "['c']" in caplog.text
    assert pred["forecast"].notna().all()
    assert model.unknown_categories_ == {"state_holiday": ["c"]}


def test_gap_in_last_season_falls_back_to_the_recent_level():
    """A series with a hole in last season's data falls back to its recent level, even when
    the rolling windows hold no 4-period window."""
    data = _daily(n_stores=2)
    h = data.history
    gap = (h["store"] == "2") & (h["ds"] >= "2014-01-20") & (h["ds"] < "2014-07-01")
    data = replace(data, history=h[~gap].reset_index(drop=True))
    spec = replace(DAILY, weekly_season=0, rolling_windows=(7, 28), profile_match=())
    grid = make_grid(data.history, None, ["open", "promo"], "D", open_column="open")
    t = grid.index_of("2015-01-20")
    f = origin_features(grid, t, 7, spec)
    two = f[f["unique_id"] == "2"]
    assert two["seas_base"].isna().all()  # last season's days are in the gap
    base = seasonal_base(two, "seas_base")
    assert np.allclose(base, two["recent_level"]) and (base > 0.5).all()
    assert "roll_mean_4" not in f


def test_weekly_features_are_those_before_daily_support():
    """Weekly data keeps exactly the feature columns (and order) it had before #13."""
    from features.build import feature_names

    spec = load_settings("dev").features
    weekly = FeatureSpec(
        season_length=spec.season_length,
        recent_lags=spec.recent_lags,
        rolling_windows=tuple(spec.rolling_windows),
    )
    before = ["scale_log", "lag_1", "lag_2", "lag_3", "lag_4"]
    before += [f"roll_{s}_{w}" for w in (4, 13, 52) for s in ("mean", "std")]
    before += ["n_obs", "growth_yoy", "seas_lag", "seas_lag_prev", "seas_lag_next"]
    before += ["seas_lag_2y", "seas_mean3", "level_ratio", "seas_adj"]
    before += ["seas_svd", "level_shrunk", "seas_base", "horizon"]
    before += ["week_of_year", "month", "is_holiday"]
    before += ["hol_super_bowl", "hol_labor_day", "hol_thanksgiving", "hol_christmas"]
    before += ["days_to_thanksgiving", "days_to_christmas", "days_to_easter"]
    before += ["month_start_days", "month_start_days_src", "cov_cpi", "cov_cpi_yoy"]
    assert feature_names(weekly, ["cpi"]) == before
    assert load_settings("dev").model.native_categorical is False  # codes, as before


def test_profile_match_must_name_a_numeric_covariate():
    """A profile matched on a column the source does not have is a settings error naming it."""
    with pytest.raises(Exception, match=r"features\.profile_match \['Promoo'\]") as err:
        load_settings("rossmann", features={"profile_match": ["Promoo"]})
    assert "got {" not in str(err.value)  # one line, not the whole settings
