"""Pages "Accuracy" (realized accuracy and interval coverage by model version) and "Model
history" (the champion now; promotions, rejections and rollbacks with their reasons)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from salesflow.config.settings import Settings
from salesflow.serving import dashboard_data as dd
from salesflow.serving.dashboard import charts, loaders
from salesflow.serving.dashboard.common import command, formatted


def render_accuracy(settings: Settings) -> None:
    st.header("Accuracy over time")
    acc = dd.accuracy_by_origin(loaders.realized_accuracy(settings, loaders.cache_key(settings)))
    if acc.empty:
        st.info(
            "No realized accuracy yet: once actuals after a forecast origin have arrived, "
            f"run {command(settings, 'monitor')}."
        )
        return
    st.caption(
        "Realized accuracy of each stored forecast origin once its actuals arrived, pooled "
        "over the horizons (weighted by rows); coverage: share of actuals inside the interval."
    )
    left, right = st.columns(2)
    left.altair_chart(charts.accuracy_chart(acc, "wmae", "WMAE"), width="stretch")
    right.altair_chart(charts.coverage_chart(acc), width="stretch")
    st.table(formatted(acc, decimals=3), hide_index=True)


def render_models(settings: Settings) -> None:
    st.header("Model history")
    key = loaders.cache_key(settings)
    versions = loaders.model_versions(settings, key)
    if not versions:
        st.info(
            f"No version of model `{settings.model.name}` is registered yet: run "
            f"{command(settings, 'train')}."
        )
        return
    alias = settings.mlflow.champion_alias
    champ = [v for v in versions if alias in v["aliases"]]
    if champ:
        c = champ[0]
        st.success(
            f"Champion: `{settings.model.name}` version {c['version']} (trained until "
            f"{c['trained_until'] or '-'}, backtest WMAE {_num(c['backtest_wmae'])}, "
            f"{_num(c['wmae_vs_seasonal_naive'], 3)} x seasonal naive)"
        )
    else:
        st.warning(f"No version holds the alias `{alias}`.")
    table = pd.DataFrame(versions).assign(aliases=lambda f: f["aliases"].map(", ".join))
    cols = ["version", "aliases", "status", "trained_until", "env", "created", "backtest_wmae"]
    st.table(formatted(table[cols], decimals=1), hide_index=True)
    st.subheader("Promotions, rejections, rollbacks")
    audit = dd.audit_view(pd.DataFrame(loaders.audit_events(settings, key)))
    if audit.empty:
        st.info(
            "No promotion, rejection or rollback recorded yet: "
            f"{command(settings, 'retrain')} records them, {command(settings, 'monitor')} "
            "rolls back, and `salesflow rollback` moves the champion by hand."
        )
        return
    st.table(formatted(audit), hide_index=True)


def _num(v: float | None, decimals: int = 1) -> str:
    return "-" if v is None else f"{v:,.{decimals}f}"
