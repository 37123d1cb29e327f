"""Altair charts of the dashboard (vega-lite, drawn by ``st.altair_chart``)."""

from __future__ import annotations

import altair as alt
import pandas as pd

COLORS = {"history": "#4c78a8", "forecast": "#e45756", "actual": "#222222"}


def series_chart(
    lines: pd.DataFrame, bands: pd.DataFrame, title: str
) -> alt.LayerChart | alt.FacetChart:
    """History and actuals as lines, the forecast as a line in its 95 % and 80 % bands."""
    x = alt.X("ds:T", title=None)
    layers: list[alt.Chart] = []
    if not bands.empty and {"lo_95", "hi_95"} <= set(bands.columns):
        base = alt.Chart(bands).encode(x=x)
        layers.append(
            base.mark_area(opacity=0.15, color=COLORS["forecast"]).encode(
                y=alt.Y("lo_95:Q", title="sales"), y2="hi_95:Q", tooltip=_tips(bands)
            )
        )
        layers.append(
            base.mark_area(opacity=0.3, color=COLORS["forecast"]).encode(y="lo_80:Q", y2="hi_80:Q")
        )
    color = alt.Color(
        "what:N",
        title=None,
        scale=alt.Scale(domain=list(COLORS), range=list(COLORS.values())),
        legend=alt.Legend(orient="top"),
    )
    layers.append(
        alt.Chart(lines)
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(
            x=x,
            y=alt.Y("value:Q", title="sales"),
            color=color,
            tooltip=["ds:T", "what:N", alt.Tooltip("value:Q", format=",.1f")],
        )
    )
    return alt.layer(*layers).properties(title=title, height=380)


def _tips(bands: pd.DataFrame) -> list[alt.Tooltip]:
    return [alt.Tooltip("ds:T", title="date")] + [
        alt.Tooltip(f"{c}:Q", format=",.1f") for c in bands.columns if c != "ds"
    ]


def store_chart(totals: pd.DataFrame) -> alt.Chart:
    """Forecast totals per store and target date, one line per store."""
    return (
        alt.Chart(totals)
        .mark_line()
        .encode(
            x=alt.X("target_date:T", title=None),
            y=alt.Y("forecast:Q", title="forecast total"),
            color=alt.Color("store:N", sort=None),
            tooltip=["store:N", "target_date:T", alt.Tooltip("forecast:Q", format=",.0f")],
        )
        .properties(height=320)
    )


def accuracy_chart(acc: pd.DataFrame, metric: str, title: str) -> alt.Chart:
    """``metric`` per forecast origin, one line per model version."""
    return (
        alt.Chart(acc)
        .mark_line(point=True)
        .encode(
            x=alt.X("forecast_origin:T", title="forecast origin"),
            y=alt.Y(f"{metric}:Q", title=title),
            color=alt.Color("model_version:N", title="version"),
            tooltip=[
                "model_version:N",
                "forecast_origin:T",
                alt.Tooltip(f"{metric}:Q", format=",.3f"),
            ],
        )
        .properties(height=260)
    )


def coverage_chart(acc: pd.DataFrame) -> alt.LayerChart | alt.FacetChart:
    """Realized 80 % and 95 % interval coverage per origin and version, with the targets."""
    long = acc.melt(
        id_vars=["model_version", "forecast_origin"],
        value_vars=[c for c in ("coverage_80", "coverage_95") if c in acc],
        var_name="interval",
        value_name="coverage",
    )
    lines = (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("forecast_origin:T", title="forecast origin"),
            y=alt.Y("coverage:Q", title="share of actuals inside", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("model_version:N", title="version"),
            strokeDash=alt.StrokeDash("interval:N"),
            shape=alt.Shape("interval:N"),
            tooltip=[
                "model_version:N",
                "interval:N",
                "forecast_origin:T",
                alt.Tooltip("coverage:Q", format=".0%"),
            ],
        )
    )
    targets = (
        alt.Chart(pd.DataFrame({"target": [0.8, 0.95]}))
        .mark_rule(strokeDash=[2, 2], color="gray")
        .encode(y="target:Q")
    )
    return alt.layer(lines, targets).properties(height=260)
