"""Codes the forecaster learns from text: keys, static attributes and categorical
covariates as numbers, and the open/closed covariate at each forecast row. Pure pandas."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from features.build import Grid
from salesflow.data.schema import DATE, ID, SalesData

log = logging.getLogger("salesflow.modelling.model")


def learn_categories(data: SalesData) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The sorted categories of each text key or static attribute, and of each categorical
    covariate (missing values left out)."""
    st = data.static_frame()
    categories = {
        c: sorted(st[c].astype(str).unique())
        for c in [*data.keys, *data.static]
        if not pd.api.types.is_numeric_dtype(st[c])
    }
    h = data.history
    cats = getattr(data, "categorical", [])
    return categories, {c: sorted(h[c].dropna().astype(str).unique()) for c in cats}


def static_codes(data: SalesData, categories: dict[str, list[str]]) -> pd.DataFrame:
    """unique_id plus one numeric column ``static_<c>`` per key and static attribute (text
    as its code among ``categories``, unknown text missing)."""
    st = data.static_frame()
    out = pd.DataFrame({ID: st[ID]})
    for col in [*data.keys, *data.static]:
        if col in categories:
            codes = pd.Categorical(st[col].astype(str), categories=categories[col]).codes
            out[f"static_{col}"] = pd.Series(codes).replace(-1, np.nan).to_numpy()
        else:
            out[f"static_{col}"] = pd.to_numeric(st[col], errors="coerce")
    return out


def code_covariates(
    frame: pd.DataFrame | None,
    cov_categories: dict[str, list[str]],
    what: str,
    unknown_seen: dict[str, list[str]],
) -> pd.DataFrame | None:
    """``frame`` with each categorical covariate as its code among the categories seen in
    training (a float; unknown values become missing, with a warning naming them; they are
    also recorded in ``unknown_seen``)."""
    if frame is None or not cov_categories:
        return frame
    out = frame.copy()
    for c, known in cov_categories.items():
        if c not in out:
            continue
        text = out[c].astype("string")
        unknown = sorted(set(text.dropna()) - set(known))
        if unknown:
            n = int(text.isin(unknown).sum())
            unknown_seen[c] = unknown
            log.warning(
                "%s: %d rows of categorical covariate %r hold values not seen in "
                "training %s: treated as missing",
                what,
                n,
                c,
                unknown[:10],
            )
        codes = pd.Categorical(text, categories=known).codes.astype(float)
        out[c] = np.where(codes < 0, np.nan, codes)
    return out


def open_values(feats: pd.DataFrame, grid: Grid, column: str | None) -> np.ndarray | None:
    """The open covariate ``column`` at each row's series and target date (NaN off the
    grid); None without an open covariate."""
    if column is None:
        return None
    k = grid.covariates.index(column)
    rows = np.searchsorted(grid.ids, feats[ID].to_numpy())
    cols = grid.dates.get_indexer(pd.DatetimeIndex(feats[DATE]))
    ok = cols >= 0
    out = np.full(len(feats), np.nan)
    out[ok] = grid.cov[rows[ok], cols[ok], k]
    return out
