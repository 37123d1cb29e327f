"""The Streamlit script of ``salesflow dashboard``: a page picker in the sidebar and the
pages of :mod:`salesflow.serving.dashboard`.

Run through the CLI (``salesflow dashboard [--env ENV]``), which calls
``streamlit run app.py -- --env ENV``; without ``--env`` the settings come from
``$SALESFLOW_ENV`` or ``dev``, like every salesflow command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from salesflow.config.settings import Settings, load_settings
from salesflow.serving.dashboard import batch, drift, forecasts, models, stores

PAGES: dict[str, Callable[[Settings], None]] = {
    "Forecasts": forecasts.render,
    "Store totals": stores.render,
    "Accuracy": models.render_accuracy,
    "Model history": models.render_models,
    "Drift": drift.render,
    "Batch forecast": batch.render,
}


def script_env(argv: list[str]) -> str | None:
    """The ``--env`` passed after ``--`` by ``streamlit run app.py -- --env ENV``; None when
    the script runs otherwise (e.g. Streamlit's AppTest inside pytest)."""
    if not argv or Path(argv[0]).name != Path(__file__).name:
        return None
    parser = argparse.ArgumentParser(prog="salesflow dashboard", add_help=False)
    parser.add_argument("--env")
    return parser.parse_known_args(argv[1:])[0].env


def main() -> None:
    st.set_page_config(page_title="salesflow", page_icon=":bar_chart:", layout="wide")
    settings = load_settings(script_env(sys.argv))
    st.sidebar.title("salesflow")
    page = st.sidebar.radio("Page", list(PAGES), key="page")
    st.sidebar.caption(
        f"env `{settings.env}` · model `{settings.model.name}`  \n"
        "Reads the warehouse and the MLflow registry directly."
    )
    PAGES[str(page)](settings)


main()
