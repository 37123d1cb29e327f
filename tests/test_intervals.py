"""Prediction intervals: residual quantiles pooled over horizons, their median over origins,
the cross-origin and leave-one-origin-out width factors, held-out coverage on the test
panel, the artifact round trip, champions saved before the factors."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from salesflow.modelling import intervals as iv
from salesflow.modelling.artifact import load_forecaster, save_forecaster
from salesflow.modelling.backtest import run_backtest
from salesflow.modelling.model import INTERVAL_LEVELS
from salesflow.modelling.training import make_forecaster

QS = sorted({q for pair in INTERVAL_LEVELS.values() for q in pair})


def _res(origin: str, values: list[float], horizons: int = 1, copies: int = 50) -> pd.DataFrame:
    """Scaled residuals of one origin: ``values`` at every horizon, ``copies`` times."""
    v = np.tile(np.repeat(values, copies), horizons)
    h = np.repeat(np.arange(1, horizons + 1), len(values) * copies)
    return pd.DataFrame({"origin": pd.Timestamp(origin), "horizon": h, "res": v})


def _coverage(frame: pd.DataFrame, level: int) -> float:
    inside = (frame[f"lo_{level}"] <= frame["y"]) & (frame["y"] <= frame[f"hi_{level}"])
    return float(inside.mean())


def test_conformal_quantile_is_the_finite_sample_rank():
    """The ceil((n + 1) * level)-th smallest score; the largest when that rank exceeds n."""
    scores = np.arange(1.0, 11.0)  # 1..10
    assert iv.conformal_quantile(scores, 0.8) == 9.0  # ceil(11 * 0.8) = 9
    assert iv.conformal_quantile(scores, 0.95) == 10.0  # ceil(10.45) = 11 > 10


def test_needed_multipliers_divide_by_the_bound_on_the_residuals_side():
    """A residual is measured against the bound on its side: the factor that just reaches it."""
    table = pd.DataFrame({"q0.1": [-2.0], "q0.9": [4.0]}, index=[1])
    res = pd.DataFrame({"horizon": [1, 1, 1], "res": [2.0, -3.0, 0.0]})
    assert iv.needed_multipliers(res, table, 0.1, 0.9).tolist() == [0.5, 1.5, 0.0]


def test_quantiles_are_pooled_over_horizons_along_the_spread_line():
    """Residuals of +-h at horizon h: the spread line is h, so horizon h's bounds are +-h."""
    res = pd.concat([_res("2020-01-03", [-h, h], copies=20).assign(horizon=h) for h in range(1, 6)])
    table = iv.residual_quantiles(res, 5, QS)
    assert table.index.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(table["q0.9"], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(table["q0.025"], [-1, -2, -3, -4, -5])


def test_a_spread_falling_with_the_horizon_is_flat():
    """Residuals of +-(6 - h): a later horizon is never more certain, so every bound is +-3."""
    res = pd.concat(
        [_res("2020-01-03", [h - 6.0, 6.0 - h], copies=20).assign(horizon=h) for h in range(1, 6)]
    )
    spread = iv.horizon_spread(res, 5)
    np.testing.assert_allclose(spread, 3.0)


def test_same_errors_in_every_origin_give_factor_one():
    """Three origins with the same residuals: the left-out one is covered as learned."""
    res = pd.concat(
        [_res(o, [-1.0, 1.0], horizons=3) for o in ("2020-01-03", "2020-04-03", "2020-07-03")]
    )
    assert iv.loo_multipliers(res, 3, INTERVAL_LEVELS) == {80: 1.0, 95: 1.0}


def test_a_window_with_three_times_the_errors_gives_factor_three():
    """Left out, +-1 needs 1/3 of +-3's bounds and +-3 needs 3x +-1's: the pooled factor is 3."""
    res = pd.concat([_res("2020-01-03", [-1.0, 1.0]), _res("2020-04-03", [-3.0, 3.0])])
    factors = iv.loo_multipliers(res, 1, INTERVAL_LEVELS)
    assert factors == pytest.approx({80: 3.0, 95: 3.0})


def test_one_origin_gives_factor_one():
    """Nothing to leave out: the bounds stay as learned."""
    res = _res("2020-01-03", [-1.0, 1.0])
    assert iv.loo_multipliers(res, 1, INTERVAL_LEVELS) == {80: 1.0, 95: 1.0}
    assert iv.cross_origin_multipliers(res, 1, INTERVAL_LEVELS) == {80: 1.0, 95: 1.0}


def test_one_unusual_origin_sets_neither_the_quantiles_nor_the_factor():
    """Origins of +-1, +-1, +-3: median table +-1; factors 1, 1, 3, 3, 1/3, 1/3: median 1."""
    res = pd.concat(
        [
            _res("2020-01-03", [-1.0, 1.0]),
            _res("2020-04-03", [-1.0, 1.0]),
            _res("2020-07-03", [-3.0, 3.0]),
        ]
    )
    table = iv.origin_median_quantiles(res, 1, QS)
    assert table.loc[1, "q0.1"] == pytest.approx(-1.0) and table.loc[1, "q0.9"] == 1.0
    assert iv.cross_origin_multipliers(res, 1, INTERVAL_LEVELS) == pytest.approx({80: 1.0, 95: 1.0})


def test_two_windows_apart_in_scale_give_the_mean_cross_factor():
    """Origins of +-1 and +-3: table +-2 (the mean), factor mean(1/3, 3) = 5/3: both covered."""
    res = pd.concat([_res("2020-01-03", [-1.0, 1.0]), _res("2020-04-03", [-3.0, 3.0])])
    assert iv.origin_median_quantiles(res, 1, QS).loc[1, "q0.9"] == pytest.approx(2.0)
    factors = iv.cross_origin_multipliers(res, 1, INTERVAL_LEVELS)
    assert factors == pytest.approx({80: 5 / 3, 95: 5 / 3})


def test_scaled_residuals_leave_closed_days_out():
    """Closed days (forecast 0 by rule) are not residuals of the model."""
    bt = pd.DataFrame(
        {
            "origin": pd.Timestamp("2020-01-03"),
            "horizon": [1, 2, 3],
            "y": [10.0, 0.0, 30.0],
            "forecast": [8.0, 0.0, 33.0],
            "scale": [2.0, 2.0, 3.0],
            "closed": [False, True, False],
        }
    )
    assert iv.scaled_residuals(bt)["res"].tolist() == [1.0, -1.0]


@pytest.fixture(scope="module")
def backtest(small_data, small_settings):
    """Backtest rows of the test panel at three origins (horizon 8, 8 weeks apart)."""
    return run_backtest(small_data, lambda: make_forecaster(small_settings), 3, 8).frame


@pytest.fixture(scope="module")
def fitted(small_data, small_settings):
    return make_forecaster(small_settings).fit(small_data)


def test_held_out_coverage_on_the_test_panel_moves_toward_nominal(backtest, fitted):
    """The last origin, bounds from the two before: nearer nominal than before, within 10 points."""
    last = backtest["origin"].max()
    held, others = backtest[backtest["origin"] == last], backtest[backtest["origin"] < last]
    model = fitted.clone()
    model.set_intervals(others)
    new = model._add_intervals(held.copy())
    old_table = (
        iv.scaled_residuals(others).groupby("horizon")["res"].quantile(QS).unstack()
    )  # salesflow's bounds before: quantiles per horizon, no factor
    old_table.columns = [f"q{q}" for q in QS]
    old = iv.add_bounds(held.copy(), old_table, model.horizon, INTERVAL_LEVELS)
    for level in INTERVAL_LEVELS:
        before, after = _coverage(old, level), _coverage(new, level)
        assert abs(after - level / 100) <= abs(before - level / 100) + 1e-9
        assert abs(after - level / 100) <= 0.10


def test_width_factors_round_trip_through_the_artifact(backtest, fitted, small_data, tmp_path):
    """interval_multipliers_ is saved and loaded as it was; the bounds are the same."""
    model = copy.deepcopy(fitted).set_intervals(backtest)
    assert set(model.interval_multipliers_) == {80, 95}
    loaded = load_forecaster(save_forecaster(model, tmp_path / "f"))
    assert loaded.interval_multipliers_ == model.interval_multipliers_
    pd.testing.assert_frame_equal(loaded.predict(small_data), model.predict(small_data))


def test_a_champion_saved_before_the_factors_keeps_its_bounds(backtest, fitted, small_data):
    """Without interval_multipliers_ (an older champion) the bounds are forecast + q * scale."""
    model = copy.deepcopy(fitted).set_intervals(backtest)
    del model.interval_multipliers_
    model.min_forecast = None  # compare unclipped bounds
    out = model.predict(small_data)
    q = model.residual_quantiles_.reindex(out["horizon"]).to_numpy()
    cols = list(model.residual_quantiles_.columns)
    lo80 = out["forecast"] + np.minimum(q[:, cols.index("q0.1")], 0) * out["scale"]
    hi95 = out["forecast"] + np.maximum(q[:, cols.index("q0.975")], 0) * out["scale"]
    np.testing.assert_allclose(out["lo_80"], lo80)
    np.testing.assert_allclose(out["hi_95"], hi95)
