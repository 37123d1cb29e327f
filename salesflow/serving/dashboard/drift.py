"""Page "Drift": the verdicts of the last monitor run and its HTML reports."""

from __future__ import annotations

import streamlit as st

from salesflow.config.settings import Settings
from salesflow.serving import dashboard_data as dd
from salesflow.serving.dashboard.common import command


def render(settings: Settings) -> None:
    st.header("Drift: last monitor run")
    root = settings.local_dir / settings.monitor.report_dir
    run = dd.last_monitor_run(root)
    if run is None:
        st.info(
            f"No monitor run has left a drift summary in `{root}` yet: run "
            f"{command(settings, 'monitor')}."
        )
        return
    acted = [k for k in run.detected if k != "prediction"]
    if acted:
        st.error(f"Drift detected ({', '.join(acted)}) on data up to {run.data_date}.")
    elif run.detected:
        st.warning(
            f"Prediction drift only, on data up to {run.data_date}: reported, not acted on "
            "(the backtest forecasts it compares with cover other weeks of the year)."
        )
    else:
        st.success(f"No drift on data up to {run.data_date}.")
    st.caption(
        f"Monitor run {run.flow_run_id or '–'} at {run.written_at[:16].replace('T', ' ')} "
        f"UTC, champion version {run.champion_version or '–'}; reports in `{run.folder}`."
    )
    st.table(run.table(), hide_index=True)
    reports = run.reports()
    if not reports:
        return
    st.subheader("Reports (Evidently HTML)")
    st.caption(
        "The links are file:// paths on the machine that runs the dashboard (browsers open "
        "them from the address bar, not from a page served over http): download a report, "
        "or open it here."
    )
    for kind, path in reports.items():
        left, right = st.columns([3, 1])
        left.markdown(f"**{kind}** drift: [`{path.as_uri()}`]({path.as_uri()})")
        right.download_button(
            f"Download {path.name}", path.read_bytes(), path.name, "text/html", key=f"dl_{kind}"
        )
        if st.toggle(f"Show the {kind} drift report here", key=f"show_{kind}"):
            st.iframe(path, height=800)  # our own report file, not user input
