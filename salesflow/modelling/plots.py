"""Figures logged with each training run (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def feature_importance(names: list[str], gains: dict, top: int = 25):
    """Horizontal bar chart of XGBoost gain per feature, largest first."""
    s = pd.Series({n: gains.get(n, 0.0) for n in names}).sort_values().tail(top)
    fig, ax = plt.subplots(figsize=(7, max(3, 0.28 * len(s))))
    s.plot.barh(ax=ax, color="#3b6ea8")
    ax.set_title("Feature importance (gain)")
    fig.tight_layout()
    return fig


def forecast_vs_actual(frame: pd.DataFrame, n_series: int = 4):
    """Backtest rows (unique_id, origin, ds, y, forecast, seasonal_naive; optionally
    lo_80/hi_80/lo_95/hi_95) of the largest series at the last origin: actuals against the
    model, its 80/95 % bands when given, and seasonal naive."""
    last = frame[frame["origin"] == frame["origin"].max()]
    top = last.groupby("unique_id")["y"].sum().nlargest(n_series).index
    fig, axes = plt.subplots(len(top), 1, figsize=(8, 2.4 * max(len(top), 1)), squeeze=False)
    for ax, uid in zip(axes[:, 0], top, strict=False):
        s = last[last["unique_id"] == uid].sort_values("ds")
        for level, alpha in (("95", 0.15), ("80", 0.3)):
            if f"lo_{level}" in s:
                ax.fill_between(
                    s["ds"],
                    s[f"lo_{level}"],
                    s[f"hi_{level}"],
                    color="#3b6ea8",
                    alpha=alpha,
                    lw=0,
                    label=f"{level} % band",
                )
        ax.plot(s["ds"], s["y"], label="actual", color="black")
        ax.plot(s["ds"], s["forecast"], label="salesflow", color="#3b6ea8")
        ax.plot(s["ds"], s["seasonal_naive"], label="seasonal naive", color="#c77", ls="--")
        ax.set_title(f"series {uid}", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    if "lo_80" in last:
        inside = {
            lv: ((last["y"] >= last[f"lo_{lv}"]) & (last["y"] <= last[f"hi_{lv}"])).mean()
            for lv in ("80", "95")
        }
        fig.suptitle(
            f"origin {pd.Timestamp(last['origin'].iloc[0]).date()}: bands from the other "
            f"origins' residuals cover {inside['80']:.0%} (80 %) / {inside['95']:.0%} (95 %) "
            "of all series' actuals",
            fontsize=9,
        )
    fig.tight_layout()
    return fig


def error_by_horizon(by_horizon: pd.DataFrame):
    """WMAE per horizon, one line per model (columns: horizon, model, wmae)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for model, g in by_horizon.groupby("model"):
        ax.plot(g["horizon"], g["wmae"], marker=".", label=model)
    ax.set_xlabel("horizon (periods ahead)")
    ax.set_ylabel("WMAE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
