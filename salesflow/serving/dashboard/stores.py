"""Page "Store totals": the latest forecast summed per store."""

from __future__ import annotations

import streamlit as st

from salesflow.config.settings import Settings
from salesflow.serving import dashboard_data as dd
from salesflow.serving.dashboard import charts, loaders
from salesflow.serving.dashboard.common import command, formatted

CHART_STORES = 15


def render(settings: Settings) -> None:
    st.header("Totals per store")
    key = loaders.cache_key(settings)
    origin = loaders.latest_origin(settings, key)
    if origin is None:
        st.info(f"No forecasts yet: run {command(settings, 'forecast')}.")
        return
    totals = loaders.store_totals(settings, key, origin)
    summary = dd.store_summary(totals)
    shown = dd.top_stores(totals, CHART_STORES)
    more = len(summary) - shown["store"].nunique()
    st.caption(
        f"Forecast origin {origin}: the sum of every series' forecast per store"
        + (
            f"; the chart shows the {CHART_STORES} largest stores ({more} more below)."
            if more
            else "."
        )
    )
    st.altair_chart(charts.store_chart(shown), width="stretch")
    table = formatted(summary, decimals=0)
    if len(table) <= 100:
        st.table(table, hide_index=True)
    else:  # a long HTML table is slow to draw: a scrolling grid instead
        st.dataframe(table, hide_index=True)
