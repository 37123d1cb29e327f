"""The training run's forecast-vs-actual figure: 80/95 % bands learned out of sample."""

from __future__ import annotations

import numpy as np
import pandas as pd

from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.plots import close, forecast_vs_actual
from salesflow.modelling.training import held_out_bands


def _frame(origins: list[str], residual: dict[str, float]) -> pd.DataFrame:
    rows = []
    for o in origins:
        for uid in ("a", "b"):
            for h in (1, 2):
                f = 100.0
                rows.append(
                    {
                        "unique_id": uid,
                        "origin": pd.Timestamp(o),
                        "ds": pd.Timestamp(o) + pd.Timedelta(weeks=h - 1),
                        "horizon": h,
                        "forecast": f,
                        "y": f + residual[o] * (1 if uid == "a" else -1),
                        "scale": 10.0,
                        "seasonal_naive": f,
                    }
                )
    return pd.DataFrame(rows)


def test_bands_come_from_the_other_origins_only():
    """The last origin's bands are as wide as the earlier origins' residuals, not its own."""
    frame = _frame(["2012-01-06", "2012-02-03"], {"2012-01-06": 30.0, "2012-02-03": 0.0})
    out = held_out_bands(GlobalForecaster(horizon=2), frame)
    assert set(out["origin"]) == {pd.Timestamp("2012-02-03")}
    width = (out["hi_95"] - out["lo_95"]).to_numpy()
    assert np.all(width > 30)  # the last origin's own residuals are 0: in-sample width ~0


def test_one_origin_has_no_bands():
    """With a single backtest origin there is nothing held out: no bounds are made up."""
    out = held_out_bands(GlobalForecaster(horizon=2), _frame(["2012-02-03"], {"2012-02-03": 5}))
    assert "lo_80" not in out


def test_figure_draws_bands_and_says_their_coverage():
    """The figure shades both bands and its title states the coverage it measured."""
    frame = _frame(["2012-01-06", "2012-02-03"], {"2012-01-06": 30.0, "2012-02-03": 0.0})
    fig = forecast_vs_actual(held_out_bands(GlobalForecaster(horizon=2), frame), n_series=2)
    try:
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert {"80 % band", "95 % band"} <= set(labels)
        assert "cover 100% (80 %) / 100% (95 %)" in fig._suptitle.get_text()
    finally:
        close(fig)
