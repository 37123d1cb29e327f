"""Features of daily data with a weekly pattern (Rossmann-style stores), leak-free.

The weekly profile of a target day is read from the same weekday of the ``weeks`` weeks
before the origin (never after it); optionally only from days that match the target day on a
covariate (e.g. ``Promo``: a promo Tuesday is compared with earlier promo Tuesdays). Closed
days are missing in the history the model sees, so they never drag a profile down. Days
to/since a closure come from the ``open`` covariate, which is known ahead (the opening plan).
"""

from __future__ import annotations

import warnings

import numpy as np

MIN_MATCHED = 2  # matched days needed before the matched profile replaces the plain one


def _same_weekday_positions(t: int, j: np.ndarray, w: int, weeks: int) -> np.ndarray:
    """``[len(j), weeks]`` grid indexes: the same weekday as each target ``j``, latest first,
    all before ``t`` (negative where the grid has no such day)."""
    k0 = (j - t) // w + 1
    return j[:, None] - w * (k0[:, None] + np.arange(weeks)[None, :])


def _take(a: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``a[:, pos]`` with NaN where ``pos`` is negative: shape ``[n, *pos.shape]``."""
    out = a[:, np.maximum(pos, 0)]
    return np.where((pos >= 0)[None], out, np.nan)


def _nan(fn, a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as wanted
        return fn(a, axis=axis)


def weekly_profile(
    ys: np.ndarray,
    t: int,
    j: np.ndarray,
    w: int,
    weeks: int,
    match: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per series and target index ``j``: ``prof_last`` (the latest same weekday before
    ``t``), ``prof_med`` / ``prof_mean`` (median / mean over ``weeks`` of them),
    ``prof_match_med`` and ``prof_match_n`` (median and count over those days that equal the
    target day on every array of ``match``, each ``[n_series, n_dates]``; a target past the
    grid matches nothing) and ``prof_base``: the matched median where at least
    :data:`MIN_MATCHED` days match, else the plain median. ``ys``: the scaled history with
    closed days missing. Nothing at or after ``t`` is read from ``ys``."""
    pos = _same_weekday_positions(t, j, w, weeks)
    vals = _take(ys[:, :t], np.where(pos < t, pos, -1))
    out = {
        "prof_last": vals[:, :, 0],
        "prof_med": _nan(np.nanmedian, vals, 2),
        "prof_mean": _nan(np.nanmean, vals, 2),
    }
    same = np.ones(vals.shape, dtype=bool)
    m = ys.shape[1]
    for cov in match or []:
        target = np.where((j < m)[None, :], cov[:, np.minimum(j, m - 1)], np.nan)
        same &= _take(cov, pos) == target[:, :, None]
    matched = np.where(same, vals, np.nan)
    n = np.sum(~np.isnan(matched), axis=2).astype(float)
    out["prof_match_med"] = _nan(np.nanmedian, matched, 2)
    out["prof_match_n"] = n
    out["prof_base"] = np.where(n >= MIN_MATCHED, out["prof_match_med"], out["prof_med"])
    return out


def closure_distances(open_: np.ndarray, j: np.ndarray, cap: int = 30) -> dict[str, np.ndarray]:
    """Per series and target index ``j``: ``days_to_closed`` (periods to the next closed
    day at or after ``j``) and ``days_since_closed`` (since the last one at or before ``j``),
    capped at ``cap``. ``open_`` is ``[n_series, n_dates]``: 1 open, 0 closed, NaN unknown
    (counted as open). A target past the grid gets NaN."""
    n, m = open_.shape
    closed = open_ == 0
    idx = np.arange(m)
    prev = np.maximum.accumulate(np.where(closed, idx, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(closed, idx, m + cap)[:, ::-1], axis=1)[:, ::-1]
    jc = np.minimum(j, m - 1)
    inside = (j < m)[None, :]
    since = np.where(prev[:, jc] >= 0, jc[None, :] - prev[:, jc], cap)
    to = nxt[:, jc] - jc[None, :]
    return {
        "days_to_closed": np.where(inside, np.minimum(to, cap), np.nan).astype(float),
        "days_since_closed": np.where(inside, np.minimum(since, cap), np.nan).astype(float),
    }
