"""Page "Forecasts": pick a series by its keys; its history, latest forecast with 80/95 %
bands and the actuals that arrived since, as a chart and as a table."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from salesflow.config.settings import Settings
from salesflow.serving import dashboard_data as dd
from salesflow.serving.dashboard import charts, loaders
from salesflow.serving.dashboard.common import command, formatted


def render(settings: Settings) -> None:
    st.header("Forecasts")
    key = loaders.cache_key(settings)
    origin = loaders.latest_origin(settings, key)
    if origin is None:
        st.info(
            f"No forecasts yet for model `{settings.model.name}`: run "
            f"{command(settings, 'forecast')} (after {command(settings, 'train')})."
        )
        return
    every = loaders.all_forecasts(settings, key, origin)
    chosen = pick_keys(dd.series_keys(every), dd.key_names(every))
    fc = loaders.series_forecast(settings, key, chosen, origin)
    if fc.empty:
        st.warning(f"No forecast rows for {chosen} at origin {origin}.")
        return
    uid = str(fc["unique_id"].iloc[0])
    history = _history(settings)
    view = dd.series_view(history, fc, uid)
    versions = ", ".join(sorted(set(fc["model_version"].astype(str))))
    st.caption(
        f"Series `{uid}` · forecast origin {origin} · model `{settings.model.name}` "
        f"version {versions} · {len(view.actuals)} actuals since the origin"
    )
    lines, bands = dd.chart_frames(view)
    st.altair_chart(charts.series_chart(lines, bands, f"series {uid}"), width="stretch")
    st.markdown("**Forecast** with its 80 % and 95 % intervals, and the actual once it arrived")
    st.table(formatted(view.table), hide_index=True)


def pick_keys(keys: pd.DataFrame, names: list[str]) -> dict[str, str]:
    """One select box per series key, each offering the values left by the ones before;
    the choice is kept in the URL (``?store=1&dept=7``) so a view can be shared."""
    chosen: dict[str, str] = {}
    subset = keys
    for col, name in zip(st.columns(len(names) or 1), names, strict=False):
        options = list(dict.fromkeys(subset[name]))
        wanted = st.query_params.get(name)
        index = options.index(wanted) if wanted in options else 0
        value = col.selectbox(name, options, index=index, key=f"key_{name}")
        if value not in options:  # a choice the keys before it no longer allow
            value = options[0]
        chosen[name] = str(value)
        subset = subset[subset[name] == value]
    st.query_params.update(chosen)
    return chosen


def _history(settings: Settings) -> pd.DataFrame | None:
    try:
        return loaders.history(settings).history
    except Exception as exc:  # the chart still shows the forecast without history
        st.warning(f"The sales history could not be read ({type(exc).__name__}: {exc}).")
        return None
