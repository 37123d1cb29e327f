"""Metrics on hand-computed examples."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from salesflow.modelling.metrics import METRICS, bias, mae, rmse, rmspe, score, score_by, wmae

Y = [10.0, 20.0, 30.0, 40.0]
YHAT = [12.0, 18.0, 30.0, 50.0]
HOL = [False, True, False, False]


def test_wmae_hand_example():
    """Errors 2,2,0,10 with the 2nd weighted 5: (2 + 10 + 0 + 10) / (1+5+1+1) = 2.75."""
    assert wmae(Y, YHAT, HOL, 5.0) == pytest.approx(22 / 8)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (mae, 14 / 4),
        (rmse, math.sqrt((4 + 4 + 0 + 100) / 4)),
        (bias, (2 - 2 + 0 + 10) / 4),
    ],
)
def test_unweighted_metrics_hand_example(fn, expected):
    """MAE, RMSE and bias (forecast minus actual) on the same four points."""
    assert fn(Y, YHAT) == pytest.approx(expected)


def test_wmae_without_holidays_is_mae():
    """With no holiday period WMAE equals MAE."""
    assert wmae(Y, YHAT, [False] * 4) == pytest.approx(mae(Y, YHAT))


@pytest.mark.parametrize(
    ("y", "yhat", "msg"),
    [([1.0], [1.0, 2.0], "shape"), ([], [], "no rows"), ([float("nan")], [1.0], "NaN")],
)
def test_bad_input_is_rejected(y, yhat, msg):
    """Mismatched, empty or NaN inputs raise a ValueError saying so."""
    with pytest.raises(ValueError, match=msg):
        mae(y, yhat)


def test_score_by_matches_scalar_functions():
    """Grouped scoring equals the scalar metrics applied per group."""
    f = pd.DataFrame({"g": ["a", "a", "b", "b"], "y": Y, "p": YHAT, "is_holiday": HOL})
    out = score_by(f, "g", ["p"]).set_index("g")
    assert out.loc["a", "wmae"] == pytest.approx(wmae(Y[:2], YHAT[:2], HOL[:2]))
    assert out.loc["b", "rmse"] == pytest.approx(rmse(Y[2:], YHAT[2:]))
    assert score(f, "p")["bias"] == pytest.approx(bias(Y, YHAT))


def test_rmspe_hand_example():
    """RMSPE skips y <= 0: errors 0.2, -0.1, 0.25 relative -> sqrt((0.04+0.01+0.0625)/3)."""
    y, yhat = [10.0, 20.0, 0.0, 40.0, -5.0], [12.0, 18.0, 7.0, 50.0, 3.0]
    assert rmspe(y, yhat) == pytest.approx(math.sqrt(0.1125 / 3))


def test_rmspe_without_positive_actuals_is_nan():
    """With no y > 0 there is no relative error to average: NaN, not an error or 0."""
    assert math.isnan(rmspe([0.0, -1.0], [1.0, 2.0]))


def test_score_and_score_by_carry_rmspe():
    """score and score_by give RMSPE beside the other metrics, per group; a group without
    y > 0 gets NaN."""
    assert "rmspe" in METRICS
    y, yhat = [10.0, 20.0, 0.0, 0.0], [12.0, 18.0, 3.0, 0.0]
    f = pd.DataFrame({"g": ["a", "a", "b", "b"], "y": y, "p": yhat, "is_holiday": False})
    out = score_by(f, "g", ["p"]).set_index("g")
    assert out.loc["a", "rmspe"] == pytest.approx(rmspe(y[:2], yhat[:2]))
    assert math.isnan(out.loc["b", "rmspe"])
    assert score(f, "p")["rmspe"] == pytest.approx(rmspe(y, yhat))
    assert list(out.columns) == ["model", *METRICS, "n"]
