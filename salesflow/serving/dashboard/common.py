"""Small helpers shared by the pages: the command a user should run, number formatting."""

from __future__ import annotations

import pandas as pd

from salesflow.config.settings import Settings


def command(settings: Settings, name: str) -> str:
    """``salesflow <name>`` with the ``--env`` of these settings unless it is the default."""
    env = "" if settings.env == "dev" else f" --env {settings.env}"
    return f"`salesflow {name}{env}`"


MISSING = "–"  # st.table renders cells as Markdown: a lone "-" would become a bullet


def formatted(frame: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """``frame`` as text for ``st.table`` (an HTML table): floats with thousands separators
    and ``decimals``, dates as YYYY-MM-DD (with HH:MM when a time is set), missing values
    as an en dash."""
    out = frame.copy()
    for c in out.columns:
        col = out[c]
        if pd.api.types.is_datetime64_any_dtype(col):
            days = col.dropna()
            timed = not days.empty and bool((days != days.dt.normalize()).any())
            out[c] = col.dt.strftime("%Y-%m-%d %H:%M" if timed else "%Y-%m-%d")
        elif pd.api.types.is_float_dtype(col):
            out[c] = col.map(lambda v: MISSING if pd.isna(v) else f"{v:,.{decimals}f}")
        out[c] = out[c].astype(object).where(out[c].notna(), MISSING)
    return out
