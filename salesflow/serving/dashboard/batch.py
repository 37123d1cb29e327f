"""Page "Batch forecast": upload a CSV of series (and what-if overrides), download the
champion's forecasts; rows that could not be used are listed with their line."""

from __future__ import annotations

import streamlit as st

from salesflow.config.settings import Settings
from salesflow.serving import dashboard_data as dd
from salesflow.serving.dashboard import loaders
from salesflow.serving.dashboard.common import command, formatted


def render(settings: Settings) -> None:
    st.header("Batch forecast")
    champ = loaders.champion(settings)
    if champ is None:
        st.info(f"No champion to forecast with: run {command(settings, 'train')}.")
        return
    model, version = champ
    data = loaders.history(settings)
    keys = list(data.keys)
    st.markdown(
        f"Upload a CSV with one row per series: the key columns `{','.join(keys)}`, and "
        "optionally a what-if change per row (`covariate`, `horizon` or `date`, `value` or "
        f"`multiply`). Up to {settings.serving.max_predict_series:,} series; forecasts from "
        f"the period after the last observation ({data.last_date.date()}) by "
        f"`{settings.model.name}` version {version}."
    )
    example = dd.example_batch_csv(data.history, keys)
    st.download_button(
        "Example CSV", example, "series.csv", "text/csv", key="example", on_click="ignore"
    )
    upload = st.file_uploader("CSV of series", type=["csv"], key="batch_csv")
    if upload is None:
        return
    from salesflow.serving.predict_inputs import PredictInputError

    try:
        result = dd.run_batch(
            model,
            version,
            settings.model.name,
            data,
            upload.getvalue().decode("utf-8", errors="replace"),
            settings.serving.max_predict_series,
        )
    except PredictInputError as exc:
        st.error(f"The file cannot be used: {exc}")
        return
    st.success(f"{result.n_series} series forecast, {len(result.errors)} rows left out.")
    st.download_button(
        "Download forecasts (CSV)",
        result.csv,
        "forecasts.csv",
        "text/csv",
        key="download",
        on_click="ignore",
        type="primary",
    )
    if result.errors:
        st.subheader("Rows left out")
        st.table(dd.row_errors(result.errors), hide_index=True)
    st.subheader("Forecasts")
    st.dataframe(formatted(result.frame), hide_index=True)
