"""The seasonal baseline the model corrects, from target values before the origin only.

Last season's value of each series, taken from a denoised history (rank-``k`` SVD of each
group's store x period matrix) at the period that matches the target (Easter-realigned),
blended with the value two seasons back carried to last season's level, times a shrunk
change of level over the last season: the ``seas_base`` column, which
``salesflow.model.seasonal_base`` reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.arrays import known, now_and_season_ago
from features.calendar import easter, period_end, period_step

if TYPE_CHECKING:
    from features.build import FeatureSpec, Grid


def denoised_history(grid: Grid, t: int, rank: int) -> np.ndarray:
    """``y[:, :t]`` with each group's store-by-week matrix replaced by its rank-``rank``
    reconstruction (truncated SVD, missing weeks as 0 and kept missing), NaN where ``y`` is.

    Series of one group (e.g. one department in every store) share a seasonal shape; the
    low-rank part keeps that shape and each series' loadings on it, and drops the
    week-to-week noise a single last-season value carries. Only data before ``t`` is read;
    series with no observation before ``t`` take no part. Groups of ``rank`` series or fewer,
    or a grid without groups, keep their raw values.
    """
    y = grid.y[:, :t]
    out = y.copy()
    if grid.group is None or rank <= 0 or t <= rank:
        return out
    active = ~np.all(np.isnan(y), axis=1)
    for g in np.unique(grid.group[active]):
        idx = np.flatnonzero((grid.group == g) & active)
        if len(idx) <= rank:
            continue
        m = y[idx]
        u, sv, vt = np.linalg.svd(np.nan_to_num(m, nan=0.0), full_matrices=False)
        out[idx] = np.where(np.isnan(m), np.nan, (u[:, :rank] * sv[:rank]) @ vt[:rank])
    return out


def shrunk_level_ratio(grid: Grid, t: int, spec: FeatureSpec) -> np.ndarray:
    """Per series: how the level moved over the last season, ``mean(y[t-L:t]) /
    mean(y[t-s-L:t-s])`` (L = ``spec.level_window``), clipped to [0.5, 2] and shrunk toward
    1 by ``spec.level_shrink``; 1 where either mean is unknown or near zero."""
    now, ago = now_and_season_ago(grid.y, t, spec.season_length, spec.level_window)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(np.abs(ago) > 1e-6, now / ago, np.nan)
    r = np.where(np.isnan(r), 1.0, np.clip(r, 0.5, 2.0))
    return 1.0 + spec.level_shrink * (r - 1.0)


def two_seasons_ago(
    smooth: np.ndarray, src: np.ndarray, src2: np.ndarray, t: int, half: int = 4
) -> np.ndarray:
    """Per series and target: the (denoised, scaled) value two seasons back, at ``src2``,
    carried to last season's level: times the growth between the two past seasons around
    the source week, the sum of ``smooth`` over ``src +- half`` divided by the sum over
    ``src2 +- half`` (pairs known in both and before ``t`` only; at least ``half + 1`` of
    them; clipped to [0.5, 2]). NaN where any of it is unknown."""
    value = known(smooth, src2, t)
    growth = np.full(value.shape, np.nan)
    offsets = np.arange(-half, half + 1)
    for c, (a, b) in enumerate(zip(src, src2, strict=True)):
        ka, kb = a + offsets, b + offsets
        ok = (ka >= 0) & (ka < t) & (kb >= 0) & (kb < t)
        if ok.sum() <= half:
            continue
        ya, yb = smooth[:, ka[ok]], smooth[:, kb[ok]]
        both = ~np.isnan(ya) & ~np.isnan(yb)
        cnt = both.sum(axis=1)
        num, den = np.where(both, ya, 0).sum(axis=1), np.where(both, yb, 0).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where((cnt > half) & (den > 0.05 * cnt), num / den, np.nan)
        growth[:, c] = np.clip(r, 0.5, 2.0)
    return value * growth


def season_source(grid: Grid, j: np.ndarray, s: int, tdates: pd.DatetimeIndex) -> np.ndarray:
    """Grid index of "the same period last season" for each target index ``j``: ``j - s``,
    except near Easter, which moves between late March and late April: a target up to
    two periods from its year's Easter period maps to the period at the same offset from
    the previous year's Easter period. Only for a season of about a year (weekly 52,
    daily 364/365); other seasons get ``j - s``."""
    src = j - s
    step = period_step(grid.freq)
    if not 350 <= (step * s).days <= 380 or len(tdates) == 0:
        return src
    years = range(tdates.min().year - 1, tdates.max().year + 1)
    labels = period_end(pd.DatetimeIndex([easter(y) for y in years]), grid.freq)
    e_idx = dict(zip(years, ((labels - grid.dates[0]) / step).astype(int), strict=True))
    for pos, (jj, d) in enumerate(zip(j, tdates, strict=True)):
        off = int(jj) - e_idx[d.year]
        if abs(off) <= 2:
            src[pos] = e_idx[d.year - 1] + off
    return src


def baseline_columns(
    grid: Grid,
    t: int,
    j: np.ndarray,
    tdates: pd.DatetimeIndex,
    scale: np.ndarray,
    spec: FeatureSpec,
) -> tuple[dict[str, np.ndarray], np.ndarray, pd.DatetimeIndex]:
    """The baseline of every series (scaled) for origin ``t`` and target indexes ``j``
    (dates ``tdates``): columns ``seas_svd`` (last season's denoised value), ``level_shrunk``
    and ``seas_base`` (their product, last season blended with two seasons back by
    ``spec.two_season_weight`` where that is known); also each target's source index and
    date last season."""
    s, horizon = spec.season_length, len(j)
    smooth = denoised_history(grid, t, spec.denoise_rank) / scale[:, None]
    src = season_source(grid, j, s, tdates)
    step = period_step(grid.freq)
    src_dates = pd.DatetimeIndex([grid.dates[0] + step * int(k) for k in src])
    last = known(smooth, src, t)
    level = np.repeat(shrunk_level_ratio(grid, t, spec)[:, None], horizon, axis=1)
    seasons = last
    if spec.two_season_weight > 0:
        older = two_seasons_ago(smooth, src, season_source(grid, src, s, src_dates), t)
        w = spec.two_season_weight
        seasons = np.where(np.isnan(older), seasons, (1 - w) * seasons + w * older)
    cols = {"seas_svd": last, "level_shrunk": level, "seas_base": seasons * level}
    return cols, src, src_dates
