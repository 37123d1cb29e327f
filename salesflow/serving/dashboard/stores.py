"""Page "Store totals": the latest forecast summed per store."""

from __future__ import annotations

import streamlit as st

from salesflow.serving import dashboard_data as dd
from salesflow.serving.dashboard import charts, loaders
from salesflow.serving.dashboard.common import command, formatted
from salesflow.settings import Settings


def render(settings: Settings) -> None:
    st.header("Totals per store")
    key = loaders.cache_key(settings)
    origin = loaders.latest_origin(settings, key)
    if origin is None:
        st.info(f"No forecasts yet: run {command(settings, 'forecast')}.")
        return
    totals = loaders.store_totals(settings, key, origin)
    st.caption(f"Forecast origin {origin}: the sum of every series' forecast per store.")
    st.altair_chart(charts.store_chart(totals), width="stretch")
    st.table(formatted(dd.store_summary(totals), decimals=0), hide_index=True)
