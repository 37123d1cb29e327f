"""Prediction intervals from backtest residuals, robust to one unusual backtest window.

The bounds of a forecast ``f`` with series scale ``s`` at horizon ``h`` are
``f + m_level * q_lo(h) * s`` and ``f + m_level * q_hi(h) * s``:

- ``q(h)`` (:func:`origin_median_quantiles`): per backtest origin, quantiles of its scaled
  residuals ``(y - forecast) / scale`` on open days, pooled over every horizon after
  dividing each residual by its horizon's spread -- a straight line, never falling,
  fitted to the mean absolute deviation per horizon (:func:`horizon_spread`) -- and
  multiplied back by the spread of ``h`` (:func:`residual_quantiles`); then the median of
  the origins' tables.
  Quantiles per horizon alone follow the calendar of the few backtest windows (on daily
  data horizon ``h`` is the same weekday and nearly the same date in every window, so one
  Easter decides a horizon's quantile) and missed new windows; the median keeps one
  unusual window (a Christmas) from widening every other window's bounds.
- ``m_level`` (:func:`cross_origin_multipliers`): the bounds of one window applied to
  another, as the shipped bounds are to the next window. For every ordered pair of
  different origins (a, b), the factor that stretches a's quantiles to cover ``level`` %
  of b's rows (split conformal's finite-sample quantile of what each row needs); the
  median over the pairs. A new window's errors are larger than those of the windows the
  bounds were learned from when windows differ (a shift of level, a holiday): the factor
  measures by how much, between the windows one has. 1.0 with a single origin.

:func:`loo_multipliers` (leave one origin out, quantiles from the others, pooled over the
left-out rows) is the simpler alternative ``benchmarks/study_intervals.py`` compares.
Pure numpy/pandas; no state. Columns in: ``origin`` (optional), ``horizon``, ``y``,
``forecast``, ``scale`` and optionally ``closed`` (closed days are left out: their forecast
is 0 by rule, not by the model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

Levels = Mapping[int, tuple[float, float]]
Quantiles = Callable[[pd.DataFrame, int, list[float]], pd.DataFrame]
_MIN_SPREAD_SHARE = 0.25  # the fitted spread never falls below 1/4 of the mean spread


def scaled_residuals(backtest: pd.DataFrame) -> pd.DataFrame:
    """Open rows of a backtest frame. Columns out: origin (``NaT`` when the frame has
    none), horizon, res = (y - forecast) / scale; rows without a residual are dropped."""
    rows = backtest
    if "closed" in rows:
        rows = rows[~rows["closed"].astype("boolean").fillna(False).to_numpy(dtype=bool)]
    origin = rows["origin"] if "origin" in rows else pd.Series(pd.NaT, index=rows.index)
    out = pd.DataFrame(
        {
            "origin": origin.to_numpy(),
            "horizon": rows["horizon"].to_numpy(dtype=int),
            "res": ((rows["y"] - rows["forecast"]) / rows["scale"]).to_numpy(dtype=float),
        }
    )
    return out[np.isfinite(out["res"])].reset_index(drop=True)


def horizon_spread(res: pd.DataFrame, horizon: int) -> np.ndarray:
    """The residual spread of horizons 1..``horizon``: a least-squares line through each
    horizon's mean absolute deviation from its median, at least a quarter of their mean;
    flat (their mean) when the line falls with the horizon or there is one horizon; ones
    without residuals."""
    dev = res.groupby("horizon")["res"].agg(lambda x: float(np.mean(np.abs(x - x.median()))))
    hs = np.arange(1, horizon + 1, dtype=float)
    if dev.empty or not np.isfinite(dev).all() or dev.mean() <= 0:
        return np.ones(horizon)
    if len(dev) == 1:
        return np.full(horizon, float(dev.iloc[0]))
    slope, icept = np.polyfit(dev.index.to_numpy(dtype=float), dev.to_numpy(), 1)
    if slope < 0:  # a later horizon is never more certain: calendar noise of few windows
        return np.full(horizon, float(dev.mean()))
    return np.maximum(icept + slope * hs, _MIN_SPREAD_SHARE * float(dev.mean()))


def residual_quantiles(res: pd.DataFrame, horizon: int, qs: list[float]) -> pd.DataFrame:
    """Quantiles ``qs`` of the scaled residuals per horizon: index horizon 1..``horizon``,
    columns ``q<q>`` (e.g. ``q0.1``). Each residual is divided by its horizon's spread
    (:func:`horizon_spread`), the quantiles are taken over all horizons together, and
    multiplied back by each horizon's spread."""
    spread = horizon_spread(res, horizon)
    h = np.clip(res["horizon"].to_numpy(dtype=int), 1, horizon)
    z = res["res"].to_numpy(dtype=float) / spread[h - 1]
    pooled = np.quantile(z, qs) if len(z) else np.zeros(len(qs))
    table = pd.DataFrame(np.outer(spread, pooled), columns=[f"q{q}" for q in qs])
    table.index = pd.RangeIndex(1, horizon + 1, name="horizon")
    return table


def origin_median_quantiles(res: pd.DataFrame, horizon: int, qs: list[float]) -> pd.DataFrame:
    """:func:`residual_quantiles` of each origin alone, then their median per horizon and
    quantile: one origin with unusual errors (a Christmas window) does not set the
    bounds of every other window. Without origins, :func:`residual_quantiles`."""
    origins = res["origin"].dropna().unique()
    if len(origins) < 2:
        return residual_quantiles(res, horizon, qs)
    tables = [residual_quantiles(res[res["origin"] == o], horizon, qs) for o in origins]
    stacked = np.stack([t.to_numpy() for t in tables])
    return pd.DataFrame(
        np.median(stacked, axis=0), index=tables[0].index, columns=tables[0].columns
    )


def needed_multipliers(res: pd.DataFrame, table: pd.DataFrame, lo: float, hi: float) -> np.ndarray:
    """Per residual, the smallest factor ``m`` with ``m * q_lo <= res <= m * q_hi`` (the
    table's bounds clipped to hold 0, as the forecaster applies them)."""
    q = table.reindex(res["horizon"].to_numpy(dtype=int))
    q_lo = np.minimum(q[f"q{lo}"].to_numpy(dtype=float), -1e-9)
    q_hi = np.maximum(q[f"q{hi}"].to_numpy(dtype=float), 1e-9)
    r = res["res"].to_numpy(dtype=float)
    return np.where(r >= 0, r / q_hi, r / q_lo)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ``ceil((n + 1) * level)``-th smallest of ``n`` scores (split conformal's
    finite-sample quantile; the largest when that rank exceeds ``n``)."""
    s = np.sort(np.asarray(scores, dtype=float))
    k = min(len(s), math.ceil((len(s) + 1) * level))
    return float(s[k - 1])


def loo_multipliers(
    res: pd.DataFrame,
    horizon: int,
    levels: Levels,
    quantiles: Quantiles = residual_quantiles,
    combine: str = "pooled",
) -> dict[int, float]:
    """Per level (e.g. 80 with quantiles (0.10, 0.90)): the factor on the bounds of
    ``quantiles`` (:func:`residual_quantiles`) that would have covered ``level`` % of each
    origin's rows with the quantiles learned from the other origins (pooled over the
    left-out rows). 1.0 for every level with fewer than two origins."""
    origins = res["origin"].dropna().unique()
    if len(origins) < 2:
        return {level: 1.0 for level in levels}
    qs = sorted({q for pair in levels.values() for q in pair})
    parts: dict[int, list[np.ndarray]] = {level: [] for level in levels}
    for o in origins:
        held = res["origin"] == o
        table = quantiles(res[~held], horizon, qs)
        for level, (lo, hi) in levels.items():
            parts[level].append(needed_multipliers(res[held], table, lo, hi))
    if combine == "median":
        return {
            level: float(np.median([conformal_quantile(x, level / 100) for x in p]))
            for level, p in parts.items()
        }
    return {level: conformal_quantile(np.concatenate(p), level / 100) for level, p in parts.items()}


def cross_origin_multipliers(res: pd.DataFrame, horizon: int, levels: Levels) -> dict[int, float]:
    """Per level: the median, over every ordered pair of different origins (a, b), of the
    factor that stretches the quantiles learned from origin a alone
    (:func:`residual_quantiles`) to cover ``level`` % of origin b's rows. The bounds of one
    window applied to another, as the shipped bounds are to the next window; the median
    keeps one unusual window (a Christmas) from setting the factor. 1.0 for every level
    with fewer than two origins."""
    origins = res["origin"].dropna().unique()
    if len(origins) < 2:
        return {level: 1.0 for level in levels}
    qs = sorted({q for pair in levels.values() for q in pair})
    rows = {o: res[res["origin"] == o] for o in origins}
    tables = {o: residual_quantiles(rows[o], horizon, qs) for o in origins}
    out = {}
    for level, (lo, hi) in levels.items():
        factors = [
            conformal_quantile(needed_multipliers(rows[b], tables[a], lo, hi), level / 100)
            for a in origins
            for b in origins
            if a != b
        ]
        out[level] = float(np.median(factors))
    return out


def add_bounds(
    out: pd.DataFrame,
    table: pd.DataFrame,
    horizon: int,
    levels: Levels,
    multipliers: Mapping[int, float] | None = None,
) -> pd.DataFrame:
    """``out`` (columns forecast, scale, horizon) with ``lo_<level>`` and ``hi_<level>``:
    the forecast plus the table's quantiles (scaled; the lower one at most 0, the upper at
    least 0) times the level's multiplier (1 when not given). Horizons beyond the table
    take its nearest row."""
    q = table.reindex(range(1, horizon + 1)).ffill().bfill()
    mult = dict(multipliers or {})
    for level, (lo, hi) in levels.items():
        m = float(mult.get(level, 1.0))
        ql = q[f"q{lo}"].reindex(out["horizon"]).to_numpy()
        qh = q[f"q{hi}"].reindex(out["horizon"]).to_numpy()
        out[f"lo_{level}"] = out["forecast"] + m * np.minimum(ql, 0) * out["scale"]
        out[f"hi_{level}"] = out["forecast"] + m * np.maximum(qh, 0) * out["scale"]
    return out
