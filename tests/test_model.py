"""The forecaster and the backtest on a small synthetic panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.build import make_grid
from salesflow.modelling.backtest import baseline_forecasts, run_backtest
from salesflow.modelling.training import evaluate, make_forecaster


@pytest.fixture(scope="module")
def fitted(small_data, small_settings):
    return make_forecaster(small_settings).fit(small_data)


def test_predict_covers_every_series_and_horizon(fitted, small_data, small_settings):
    """Default origin = the period after the data; one row per series x horizon."""
    out = fitted.predict(small_data)
    h = small_settings.model.horizon
    assert len(out) == small_data.n_series * h
    assert out["origin"].unique().tolist() == [small_data.last_date + pd.Timedelta(days=7)]
    assert sorted(out["horizon"].unique()) == list(range(1, h + 1))
    assert np.isfinite(out["forecast"]).all()
    assert {"store", "dept"} <= set(out.columns)


def test_predict_ignores_data_at_or_after_origin(fitted, small_data):
    """Forecasts for origin T are the same whatever the actuals at or after T are."""
    origin = small_data.history["ds"].sort_values().unique()[-10]
    a = fitted.predict(small_data, origin=origin)
    h = small_data.history.copy()
    h.loc[h.ds >= origin, "y"] *= 5
    from dataclasses import replace

    b = fitted.predict(replace(small_data, history=h), origin=origin)
    pd.testing.assert_frame_equal(a, b)


def test_unfitted_model_says_so(small_settings, small_data):
    """predict before fit raises a ValueError telling what to do."""
    with pytest.raises(ValueError, match="not fitted"):
        make_forecaster(small_settings).predict(small_data)


def test_intervals_bracket_the_forecast(fitted, small_data):
    """After set_intervals, lo_95 <= lo_80 <= forecast <= hi_80 <= hi_95."""
    bt = pd.DataFrame(
        {"horizon": np.repeat(np.arange(1, 9), 50), "y": np.random.default_rng(0).normal(0, 1, 400)}
    ).assign(forecast=0.0, scale=1.0)
    out = fitted.set_intervals(bt).predict(small_data)
    assert (out.lo_95 <= out.lo_80).all() and (out.lo_80 <= out.forecast).all()
    assert (out.forecast <= out.hi_80).all() and (out.hi_80 <= out.hi_95).all()
    fitted.residual_quantiles_ = None


def test_baselines_hand_example():
    """Seasonal naive repeats last season's value; naive repeats the last observation."""
    dates = pd.date_range("2010-01-01", periods=60, freq="7D")
    h = pd.DataFrame({"unique_id": "a", "ds": dates, "y": np.arange(60.0), "is_holiday": False})
    grid = make_grid(h, None, [], "W-FRI")
    b = baseline_forecasts(grid, 55, 3, 52)
    assert b["naive"].tolist() == [54.0, 54.0, 54.0]
    assert b["seasonal_naive"].tolist() == [3.0, 4.0, 5.0]


def test_backtest_scores_only_after_each_origin(small_data, small_settings):
    """Every scored row is at or after its origin and within the horizon."""
    bt = evaluate(small_data, small_settings)
    f = bt.frame
    assert (f["ds"] >= f["origin"]).all()
    assert f["horizon"].between(1, small_settings.model.horizon).all()
    assert len(bt.origins) == small_settings.backtest.n_origins
    ov = bt.overall()
    assert set(ov.index) == {"forecast", "seasonal_naive", "naive"}
    assert ov.loc["seasonal_naive", "wmae_vs_seasonal_naive"] == pytest.approx(1.0)


def test_backtest_models_never_see_their_test_window(small_data, small_settings):
    """The model of each origin is fitted on data that ends before the origin."""
    seen = []
    run_backtest(
        small_data,
        lambda: make_forecaster(small_settings),
        2,
        8,
        on_origin=lambda origin, m: seen.append((origin, m.trained_until_)),
    )
    assert all(trained < origin for origin, trained in seen)


def test_too_short_data_for_backtest_is_explained(small_data, small_settings):
    """A backtest that cannot fit in the data fails with advice on what to lower."""
    s = small_settings.model_copy(
        update={"backtest": small_settings.backtest.model_copy(update={"n_origins": 20})}
    )
    with pytest.raises(ValueError, match="lower backtest.n_origins"):
        evaluate(small_data, s)


def test_champion_from_before_the_denoised_baseline_keeps_its_own(fitted, small_data):
    """A model pickled before ``base_column_`` existed corrects the raw seasonal lag, as it
    was trained to: its forecasts differ from today's by (seas_lag - seas_base) x scale."""
    import copy

    from features.build import origin_features
    from salesflow.modelling.model import seasonal_base

    old = copy.deepcopy(fitted)
    del old.base_column_
    new_f, old_f = fitted.predict(small_data), old.predict(small_data)
    grid = fitted._with_groups(
        make_grid(small_data.history, None, fitted.covariates_, small_data.freq, extend=8),
        small_data,
    )
    t = len(grid.dates) - 8
    feats = origin_features(grid, t, fitted.horizon, fitted.spec)
    diff = (seasonal_base(feats) - seasonal_base(feats, "seas_lag")) * feats["scale"]
    assert not np.allclose(diff, 0)
    np.testing.assert_allclose(new_f["forecast"] - old_f["forecast"], diff, rtol=1e-4, atol=1e-3)


def test_baseline_column_is_the_forecast_without_the_trees_correction(fitted, small_data):
    """``with_baseline`` adds the seasonal baseline and leaves the forecast as it was; the
    baseline is what the model forecasts when its trees correct nothing."""
    import copy
    import types

    plain = fitted.predict(small_data)
    out = fitted.predict(small_data, with_baseline=True)
    pd.testing.assert_frame_equal(out.drop(columns="baseline"), plain)
    no_trees = copy.deepcopy(fitted)
    no_trees.model_ = types.SimpleNamespace(predict=lambda x: np.zeros(len(x)))
    np.testing.assert_allclose(out["baseline"], no_trees.predict(small_data)["forecast"])
    assert not np.allclose(out["baseline"], out["forecast"])


def test_backtest_can_carry_the_models_baseline(small_data, small_settings):
    """``with_baseline`` adds each origin's model baseline; the scored rows are unchanged."""

    def run(**kw):
        make = lambda: make_forecaster(small_settings)  # noqa: E731
        return run_backtest(small_data, make, 1, 8, **kw).frame

    plain, with_base = run(), run(with_baseline=True)
    pd.testing.assert_frame_equal(with_base.drop(columns="baseline"), plain)
    assert np.isfinite(with_base["baseline"]).all()
