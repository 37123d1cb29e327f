"""Leak-free features for direct multi-horizon forecasting, shared by training and scoring.

For a forecast origin ``T`` (the first target period) and horizon ``h`` (1-based), the
target date is ``T + (h - 1)`` periods. Every feature of that row is computed from target
values strictly before ``T``; the only facts about later dates are the calendar of the
target date and the covariates known for it (or, with ``future_covariates=False``, their
last value before ``T``).

All target-derived features are divided by the series' ``scale`` (mean absolute target over
the last season before ``T``), so one global model serves series of any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.calendar import (
    HOLIDAYS,
    easter,
    holiday_calendar,
    holiday_dates,
    is_holiday_period,
    period_end,
)

ID, DATE, TARGET = "unique_id", "ds", "y"
_OFFSETS = {"D": pd.Timedelta(days=1)}


def period_step(freq: str) -> pd.Timedelta:
    """One period of ``freq`` as a Timedelta (``W-*`` = 7 days, ``D`` = 1 day)."""
    return _OFFSETS.get(freq, pd.Timedelta(days=7))


@dataclass(frozen=True)
class FeatureSpec:
    """What to compute: mirrors ``FeaturesSection`` of the settings."""

    season_length: int = 52
    recent_lags: int = 4
    rolling_windows: tuple[int, ...] = (4, 13, 52)
    future_covariates: bool = True
    denoise_rank: int = 5
    level_window: int = 8
    level_shrink: float = 0.5
    # 0.0 here (last season only) so that a model pickled before this field keeps the
    # baseline it was trained with; the shipped configuration sets 0.25.
    two_season_weight: float = 0.0


@dataclass(frozen=True)
class Grid:
    """The panel on a regular date grid.

    ``y`` is ``[n_series, n_dates]`` with NaN where nothing was observed; ``cov`` is
    ``[n_series, n_dates, n_covariates]``; ``holiday`` is ``[n_dates]``; ``group`` (optional)
    labels series that share a seasonal shape (e.g. the department of a store x department
    series), ``[n_series]``, for :func:`denoised_history`.
    """

    ids: np.ndarray
    dates: pd.DatetimeIndex
    y: np.ndarray
    cov: np.ndarray
    holiday: np.ndarray
    covariates: tuple[str, ...]
    freq: str
    group: np.ndarray | None = None

    def index_of(self, date: pd.Timestamp | str) -> int:
        """Position of ``date`` on the grid; ValueError if it is not a grid date."""
        pos = self.dates.get_indexer([pd.Timestamp(date)])[0]
        if pos < 0:
            raise ValueError(
                f"{pd.Timestamp(date).date()} is not on the {self.freq} grid "
                f"({self.dates[0].date()} .. {self.dates[-1].date()})"
            )
        return int(pos)


def make_grid(
    history: pd.DataFrame,
    future: pd.DataFrame | None,
    covariates: list[str],
    freq: str,
    extend: int = 0,
) -> Grid:
    """Put ``history`` (unique_id, ds, y, is_holiday, covariates) and ``future`` (unique_id,
    ds, covariates) on one regular grid, ``extend`` periods past the last observation."""
    step = period_step(freq)
    start, last = history[DATE].min(), history[DATE].max()
    end = last + step * extend
    if future is not None and len(future):
        end = max(end, future[DATE].max())
    dates = pd.date_range(start, end, freq=step)
    ids = np.sort(history[ID].unique())
    frames = [history] + ([future] if future is not None and len(future) else [])
    both = pd.concat(frames, ignore_index=True)
    both = both[both[ID].isin(ids) & (both[DATE] >= start) & (both[DATE] <= end)]
    rows = np.searchsorted(ids, both[ID].to_numpy())
    cols = dates.get_indexer(both[DATE])
    ok = cols >= 0
    y = np.full((len(ids), len(dates)), np.nan)
    has_y = ok & both[TARGET].notna().to_numpy() if TARGET in both else ok & False
    y[rows[has_y], cols[has_y]] = both[TARGET].to_numpy(dtype=float)[has_y]
    cov = np.full((len(ids), len(dates), len(covariates)), np.nan)
    for k, c in enumerate(covariates):
        cov[rows[ok], cols[ok], k] = both[c].to_numpy(dtype=float)[ok]
    return Grid(ids, dates, y, cov, _holiday_flags(both, dates, freq), tuple(covariates), freq)


def _holiday_flags(frame: pd.DataFrame, dates: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """The data's own holiday flags where it has them, the calendar's elsewhere."""
    flags = is_holiday_period(dates, freq)
    if "is_holiday" in frame:
        known = frame.dropna(subset=["is_holiday"]).groupby(DATE)["is_holiday"].max()
        pos = dates.get_indexer(known.index)
        flags[pos[pos >= 0]] = known.to_numpy(dtype=bool)[pos >= 0]
    return flags


def calendar_features(dates: pd.DatetimeIndex, holiday: np.ndarray, freq: str) -> pd.DataFrame:
    """Calendar facts of each date: week, month, holiday flags, days to Thanksgiving/Christmas."""
    out = pd.DataFrame(index=dates)
    out["week_of_year"] = dates.isocalendar().week.to_numpy().astype(float)
    out["month"] = dates.month.astype(float)
    out["is_holiday"] = holiday.astype(float)
    cal = holiday_calendar(dates.min() - pd.Timedelta(days=400), dates.max(), freq)
    for name in HOLIDAYS:
        out[f"hol_{name}"] = dates.isin(cal.loc[cal.holiday == name, "ds"]).astype(float)
    hd = holiday_dates(range(dates.min().year - 1, dates.max().year + 2))
    for name in ("thanksgiving", "christmas"):
        days = hd.loc[hd.holiday == name, "date"].sort_values().to_numpy()
        nxt = np.searchsorted(days, dates.to_numpy())
        nxt = np.minimum(nxt, len(days) - 1)
        out[f"days_to_{name}"] = (days[nxt] - dates.to_numpy()) / np.timedelta64(1, "D")
    # Signed days from each period's label to its year's Easter (Easter moves 5 weeks).
    eas = pd.DatetimeIndex([easter(y) for y in dates.year])
    out["days_to_easter"] = ((eas - dates) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    return out


def _window(y: np.ndarray, t: int, w: int) -> np.ndarray:
    return y[:, max(t - w, 0) : t]


def _nanstat(fn, a: np.ndarray) -> np.ndarray:
    """``fn`` over the last axis, NaN (silently) where a row has no value."""
    out = np.full(a.shape[0], np.nan)
    has = ~np.all(np.isnan(a), axis=1) if a.shape[1] else np.zeros(a.shape[0], bool)
    if has.any():
        out[has] = fn(a[has], axis=1)
    return out


def _now_and_season_ago(y: np.ndarray, t: int, s: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per series: the mean over the ``w`` periods before ``t``, and over the same ``w``
    periods one season (``s``) earlier; NaN where a window has no observation."""
    now = _nanstat(np.nanmean, _window(y, t, w))
    ago = _nanstat(np.nanmean, _window(y, t - s, w)) if t - s > 0 else np.full(len(y), np.nan)
    return now, ago


def series_scale(grid: Grid, t: int, season: int) -> np.ndarray:
    """Per series: mean |y| over the last season before index ``t`` (all history if none
    there), at least 1.0; NaN for a series with no observation before ``t``."""
    recent = _nanstat(np.nanmean, np.abs(_window(grid.y, t, season)))
    anyold = _nanstat(np.nanmean, np.abs(grid.y[:, :t]))
    scale = np.where(np.isnan(recent), anyold, recent)
    return np.where(np.isnan(scale), np.nan, np.maximum(scale, 1.0))


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
    now, ago = _now_and_season_ago(grid.y, t, spec.season_length, spec.level_window)
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
    value = _known(smooth, src2, t)
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


def _origin_stats(grid: Grid, t: int, spec: FeatureSpec, scale: np.ndarray) -> dict:
    """Features of each series that depend only on the origin, not on the horizon."""
    y = grid.y / scale[:, None]
    f: dict[str, np.ndarray] = {"scale_log": np.log1p(scale)}
    for k in range(1, spec.recent_lags + 1):
        f[f"lag_{k}"] = y[:, t - k] if t - k >= 0 else np.full(len(scale), np.nan)
    for w in spec.rolling_windows:
        win = _window(y, t, w)
        f[f"roll_mean_{w}"] = _nanstat(np.nanmean, win)
        f[f"roll_std_{w}"] = _nanstat(np.nanstd, win)
    f["n_obs"] = np.sum(~np.isnan(grid.y[:, :t]), axis=1).astype(float)
    s = spec.season_length
    last13, year_ago13 = _now_and_season_ago(y, t, s, 13)
    with np.errstate(divide="ignore", invalid="ignore"):
        f["growth_yoy"] = np.where(np.abs(year_ago13) > 1e-6, last13 / year_ago13, np.nan)
    return f


def _known(y: np.ndarray, idx: np.ndarray, t: int) -> np.ndarray:
    """``y[:, idx]`` where ``0 <= idx < t``, NaN elsewhere (the future is never read)."""
    out = np.full((y.shape[0], len(idx)), np.nan)
    ok = (idx >= 0) & (idx < t)
    out[:, ok] = y[:, idx[ok]]
    return out


def origin_features(grid: Grid, t: int, horizon: int, spec: FeatureSpec) -> pd.DataFrame:
    """Features of every series for origin index ``t`` and horizons 1..``horizon``.

    Columns out: unique_id, origin, ds, horizon, scale, y (NaN where unknown or off-grid),
    then the feature columns (see :func:`feature_names`). Rows of series with no
    observation before ``t`` are left out. Target dates past the grid get NaN y.
    """
    n, m = grid.y.shape
    scale = series_scale(grid, t, spec.season_length)
    keep = ~np.isnan(scale)
    hs = np.arange(1, horizon + 1)
    j = t + hs - 1
    jc = np.minimum(j, m - 1)
    ys = grid.y / scale[:, None]
    step = period_step(grid.freq)
    dates = grid.dates[jc] if m else grid.dates
    extra = pd.DatetimeIndex([grid.dates[-1] + step * (jj - m + 1) for jj in j[j >= m]])
    tdates = dates[: int(np.sum(j < m))].append(extra)
    cols: dict[str, np.ndarray] = {}
    for name, v in _origin_stats(grid, t, spec, scale).items():
        cols[name] = np.repeat(v[:, None], horizon, axis=1)
    s = spec.season_length
    cols["seas_lag"] = _known(ys, j - s, t)
    cols["seas_lag_prev"] = _known(ys, j - s - 1, t)
    cols["seas_lag_next"] = _known(ys, j - s + 1, t)
    cols["seas_lag_2y"] = _known(ys, j - 2 * s, t)
    three = np.stack([cols["seas_lag"], cols["seas_lag_prev"], cols["seas_lag_next"]])
    cnt = np.sum(~np.isnan(three), axis=0)
    cols["seas_mean3"] = np.where(cnt > 0, np.nansum(three, axis=0) / np.maximum(cnt, 1), np.nan)
    # Last season's value scaled by how the level moved since then: recent mean over the
    # mean of the same weeks a season earlier (both before the origin).
    now_level, ly_level = _now_and_season_ago(ys, t, s, 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ly_level > 0.05, now_level / ly_level, np.nan)
    cols["level_ratio"] = np.repeat(np.clip(ratio, 0.2, 5.0)[:, None], horizon, axis=1)
    cols["seas_adj"] = cols["seas_mean3"] * cols["level_ratio"]
    # The baseline the model corrects: last season's value from the denoised history
    # (blended with the value two seasons back, carried to last season's level), times
    # the shrunk level change (see model.seasonal_base).
    smooth = denoised_history(grid, t, spec.denoise_rank) / scale[:, None]
    src = season_source(grid, j, s, tdates)
    src_dates = pd.DatetimeIndex([grid.dates[0] + step * int(k) for k in src])
    cols["seas_svd"] = _known(smooth, src, t)
    cols["level_shrunk"] = np.repeat(shrunk_level_ratio(grid, t, spec)[:, None], horizon, axis=1)
    seasons = cols["seas_svd"]
    if spec.two_season_weight > 0:
        older = two_seasons_ago(smooth, src, season_source(grid, src, s, src_dates), t)
        w = spec.two_season_weight
        seasons = np.where(np.isnan(older), seasons, (1 - w) * seasons + w * older)
    cols["seas_base"] = seasons * cols["level_shrunk"]
    cols["horizon"] = np.broadcast_to(hs.astype(float), (n, horizon))
    cal = calendar_features(tdates, _target_holidays(grid, j, tdates), grid.freq)
    for c in cal.columns:
        cols[c] = np.broadcast_to(cal[c].to_numpy(), (n, horizon))
    for name, dd in (("month_start_days", tdates), ("month_start_days_src", src_dates)):
        cols[name] = np.broadcast_to(_month_start_days(dd, step), (n, horizon))
    cov_idx = jc if spec.future_covariates else np.full_like(jc, t - 1)
    for k, c in enumerate(grid.covariates):
        v = grid.cov[:, np.clip(cov_idx, 0, m - 1), k]
        v = np.where((j < m)[None, :] | (not spec.future_covariates), v, np.nan)
        cols[f"cov_{c}"] = v
        # Change since the season-source week (what last season's value was made under).
        cols[f"cov_{c}_yoy"] = v - _known(grid.cov[:, :, k], src, t)
    target = np.where((j < m)[None, :], grid.y[:, jc], np.nan)
    return _assemble(grid, t, tdates, hs, scale, keep, target, cols)


def _month_start_days(labels: pd.DatetimeIndex, step: pd.Timedelta) -> np.ndarray:
    """Days of each period (ending at its label) that fall on days 1-7 of a month (paydays)."""
    days = step.days
    out = np.zeros(len(labels))
    for k in range(days):
        out += (labels - pd.Timedelta(days=k)).day <= 7
    return out


def _target_holidays(grid: Grid, j: np.ndarray, tdates: pd.DatetimeIndex) -> np.ndarray:
    inside = j < len(grid.dates)
    out = is_holiday_period(tdates, grid.freq)
    out[inside] = grid.holiday[j[inside]]
    return out


def _assemble(grid, t, tdates, hs, scale, keep, target, cols) -> pd.DataFrame:
    n_keep, horizon = int(keep.sum()), len(hs)
    origin = grid.dates[t] if t < len(grid.dates) else tdates[0]
    out = {
        ID: np.repeat(grid.ids[keep], horizon),
        "origin": np.full(n_keep * horizon, origin, dtype="datetime64[ns]"),
        DATE: np.tile(tdates.to_numpy(), n_keep),
        "scale": np.repeat(scale[keep], horizon),
        TARGET: target[keep].ravel(),
    }
    for name, v in cols.items():
        out[name] = np.asarray(v)[keep].ravel().astype(np.float32)
    return pd.DataFrame(out)


def feature_names(spec: FeatureSpec, covariates: list[str] | tuple[str, ...]) -> list[str]:
    """The feature columns :func:`origin_features` produces, in order."""
    names = ["scale_log"]
    names += [f"lag_{k}" for k in range(1, spec.recent_lags + 1)]
    for w in spec.rolling_windows:
        names += [f"roll_mean_{w}", f"roll_std_{w}"]
    names += ["n_obs", "growth_yoy", "seas_lag", "seas_lag_prev", "seas_lag_next"]
    names += ["seas_lag_2y", "seas_mean3", "level_ratio", "seas_adj"]
    names += ["seas_svd", "level_shrunk", "seas_base", "horizon"]
    names += ["week_of_year", "month", "is_holiday"]
    names += [f"hol_{h}" for h in HOLIDAYS]
    names += ["days_to_thanksgiving", "days_to_christmas", "days_to_easter"]
    names += ["month_start_days", "month_start_days_src"]
    for c in covariates:
        names += [f"cov_{c}", f"cov_{c}_yoy"]
    return names


def training_frame(
    grid: Grid, end: int, horizon: int, spec: FeatureSpec, min_history: int, stride: int
) -> pd.DataFrame:
    """Rows for every origin ``t`` in ``[min_history, end)`` (every ``stride``-th, counted
    back from ``end - 1``) and horizon whose target index is before ``end`` and observed."""
    origins = list(range(end - 1, min_history - 1, -stride))[::-1]
    if not origins:
        raise ValueError(
            f"not enough history to train: {end} periods before the cut-off, need more than "
            f"{min_history} (model.min_train_history)"
        )
    parts = []
    for t in origins:
        h = min(horizon, end - t)
        f = origin_features(grid, t, h, spec)
        parts.append(f[f[TARGET].notna()])
    return pd.concat(parts, ignore_index=True)
