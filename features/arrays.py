"""Array helpers over a grid's series x period matrix, shared by the feature modules."""

from __future__ import annotations

import numpy as np


def window(y: np.ndarray, t: int, w: int) -> np.ndarray:
    return y[:, max(t - w, 0) : t]


def nanstat(fn, a: np.ndarray) -> np.ndarray:
    """``fn`` over the last axis, NaN (silently) where a row has no value."""
    out = np.full(a.shape[0], np.nan)
    has = ~np.all(np.isnan(a), axis=1) if a.shape[1] else np.zeros(a.shape[0], bool)
    if has.any():
        out[has] = fn(a[has], axis=1)
    return out


def now_and_season_ago(y: np.ndarray, t: int, s: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per series: the mean over the ``w`` periods before ``t``, and over the same ``w``
    periods one season (``s``) earlier; NaN where a window has no observation."""
    now = nanstat(np.nanmean, window(y, t, w))
    ago = nanstat(np.nanmean, window(y, t - s, w)) if t - s > 0 else np.full(len(y), np.nan)
    return now, ago


def known(y: np.ndarray, idx: np.ndarray, t: int) -> np.ndarray:
    """``y[:, idx]`` where ``0 <= idx < t``, NaN elsewhere (the future is never read)."""
    out = np.full((y.shape[0], len(idx)), np.nan)
    ok = (idx >= 0) & (idx < t)
    out[:, ok] = y[:, idx[ok]]
    return out
