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

from features.arrays import known, nanstat, now_and_season_ago, window
from features.calendar import (
    HOLIDAYS,
    easter,
    holiday_calendar,
    holiday_dates,
    period_step,
)
from features.daily import closure_distances, weekly_profile
from features.holidays import HolidaySpec, country_features, distance_features, holiday_flags
from features.holidays import feature_names as holiday_feature_names
from features.seasonal import baseline_columns

ID, DATE, TARGET = "unique_id", "ds", "y"
# Columns of the feature frame after the features that the model reads but does not learn
# from: the baseline's fallback level (see salesflow.model.seasonal_base).
AUX_COLUMNS = ("recent_level",)


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
    # Daily data with a weekly pattern (0: none, as for weekly data): the weekly profile of
    # the last ``profile_weeks`` weeks, matched on the ``profile_match`` covariates.
    weekly_season: int = 0
    profile_weeks: int = 13
    profile_match: tuple[str, ...] = ()
    holidays: HolidaySpec = HolidaySpec()
    # Set by the model from the data: the open/closed covariate (closed days are missing in
    # the history features read) and the categorical covariates (codes: no difference taken).
    open_column: str | None = None
    categorical: tuple[str, ...] = ()


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
    holidays: HolidaySpec | None = None,
    open_column: str | None = None,
) -> Grid:
    """Put ``history`` (unique_id, ds, y, is_holiday, covariates) and ``future`` (unique_id,
    ds, covariates) on one regular grid, ``extend`` periods past the last observation.
    Covariates must be numeric (categorical ones as codes). ``holidays``: the calendar that
    flags dates the data does not (default: the US retail one). ``open_column``: a covariate
    that is 0 on closed days; their target becomes missing (left out of every feature)."""
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
    if open_column is not None:
        y[cov[:, :, covariates.index(open_column)] == 0] = np.nan
    flags = _holiday_flags(both, dates, freq, holidays or HolidaySpec())
    return Grid(ids, dates, y, cov, flags, tuple(covariates), freq)


def _holiday_flags(
    frame: pd.DataFrame, dates: pd.DatetimeIndex, freq: str, spec: HolidaySpec
) -> np.ndarray:
    """The data's own holiday flags where it has them, the configured calendar's elsewhere."""
    flags = holiday_flags(dates, freq, spec)
    if "is_holiday" in frame:
        known = frame.dropna(subset=["is_holiday"]).groupby(DATE)["is_holiday"].max()
        pos = dates.get_indexer(known.index)
        flags[pos[pos >= 0]] = known.to_numpy(dtype=bool)[pos >= 0]
    return flags


def calendar_features(
    dates: pd.DatetimeIndex,
    holiday: np.ndarray,
    freq: str,
    spec: FeatureSpec | None = None,
    holiday_days: pd.DatetimeIndex | None = None,
) -> pd.DataFrame:
    """Calendar facts of each date: week, month, holiday flag and the configured
    calendar's features (US retail: the four holidays, days to Thanksgiving/Christmas;
    a country: its public holidays), days to Easter; for daily data also the day of week
    and of month and, from ``holiday_days`` (the dates flagged holidays), days to and since
    the nearest one."""
    spec = spec or FeatureSpec()
    out = pd.DataFrame(index=dates)
    out["week_of_year"] = dates.isocalendar().week.to_numpy().astype(float)
    out["month"] = dates.month.astype(float)
    out["is_holiday"] = holiday.astype(float)
    if spec.weekly_season:
        out["day_of_week"] = dates.dayofweek.astype(float)
        out["day_of_month"] = dates.day.astype(float)
        marked = holiday_days if holiday_days is not None else dates[holiday.astype(bool)]
        for name, v in distance_features(dates, marked, "holiday").items():
            out[name] = v
    if spec.holidays.us_retail:
        cal = holiday_calendar(dates.min() - pd.Timedelta(days=400), dates.max(), freq)
        for name in HOLIDAYS:
            out[f"hol_{name}"] = dates.isin(cal.loc[cal.holiday == name, "ds"]).astype(float)
        hd = holiday_dates(range(dates.min().year - 1, dates.max().year + 2))
        for name in ("thanksgiving", "christmas"):
            days = hd.loc[hd.holiday == name, "date"].sort_values().to_numpy()
            nxt = np.searchsorted(days, dates.to_numpy())
            nxt = np.minimum(nxt, len(days) - 1)
            out[f"days_to_{name}"] = (days[nxt] - dates.to_numpy()) / np.timedelta64(1, "D")
    for name, v in country_features(dates, freq, spec.holidays).items():
        out[name] = v
    # Signed days from each period's label to its year's Easter (Easter moves 5 weeks).
    eas = pd.DatetimeIndex([easter(y) for y in dates.year])
    out["days_to_easter"] = ((eas - dates) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    return out


def calendar_names(spec: FeatureSpec) -> list[str]:
    """The columns of :func:`calendar_features` for ``spec``, in order."""
    names = ["week_of_year", "month", "is_holiday"]
    if spec.weekly_season:
        names += ["day_of_week", "day_of_month", "days_to_holiday", "days_since_holiday"]
    return [*names, *holiday_feature_names(spec.holidays), "days_to_easter"]


def series_scale(grid: Grid, t: int, season: int) -> np.ndarray:
    """Per series: mean |y| over the last season before index ``t`` (all history if none
    there), at least 1.0; NaN for a series with no observation before ``t``."""
    recent = nanstat(np.nanmean, np.abs(window(grid.y, t, season)))
    anyold = nanstat(np.nanmean, np.abs(grid.y[:, :t]))
    scale = np.where(np.isnan(recent), anyold, recent)
    return np.where(np.isnan(scale), np.nan, np.maximum(scale, 1.0))


def recent_level(y: np.ndarray, t: int, w: int) -> np.ndarray:
    """Per series: the mean over the ``w`` periods before ``t`` (NaN where none of them was
    observed): the baseline's fallback, which exists whatever ``rolling_windows`` holds."""
    return nanstat(np.nanmean, window(y, t, w))


def _origin_stats(grid: Grid, t: int, spec: FeatureSpec, scale: np.ndarray) -> dict:
    """Features of each series that depend only on the origin, not on the horizon."""
    y = grid.y / scale[:, None]
    f: dict[str, np.ndarray] = {"scale_log": np.log1p(scale)}
    for k in range(1, spec.recent_lags + 1):
        f[f"lag_{k}"] = y[:, t - k] if t - k >= 0 else np.full(len(scale), np.nan)
    for w in spec.rolling_windows:
        win = window(y, t, w)
        f[f"roll_mean_{w}"] = nanstat(np.nanmean, win)
        f[f"roll_std_{w}"] = nanstat(np.nanstd, win)
    f["n_obs"] = np.sum(~np.isnan(grid.y[:, :t]), axis=1).astype(float)
    f["recent_level"] = recent_level(y, t, 4 * max(spec.weekly_season, 1))
    s = spec.season_length
    last13, year_ago13 = now_and_season_ago(y, t, s, 13)
    with np.errstate(divide="ignore", invalid="ignore"):
        f["growth_yoy"] = np.where(np.abs(year_ago13) > 1e-6, last13 / year_ago13, np.nan)
    return f


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
    cols["seas_lag"] = known(ys, j - s, t)
    cols["seas_lag_prev"] = known(ys, j - s - 1, t)
    cols["seas_lag_next"] = known(ys, j - s + 1, t)
    cols["seas_lag_2y"] = known(ys, j - 2 * s, t)
    three = np.stack([cols["seas_lag"], cols["seas_lag_prev"], cols["seas_lag_next"]])
    cnt = np.sum(~np.isnan(three), axis=0)
    cols["seas_mean3"] = np.where(cnt > 0, np.nansum(three, axis=0) / np.maximum(cnt, 1), np.nan)
    # Last season's value scaled by how the level moved since then: recent mean over the
    # mean of the same weeks a season earlier (both before the origin).
    now_level, ly_level = now_and_season_ago(ys, t, s, 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ly_level > 0.05, now_level / ly_level, np.nan)
    cols["level_ratio"] = np.repeat(np.clip(ratio, 0.2, 5.0)[:, None], horizon, axis=1)
    cols["seas_adj"] = cols["seas_mean3"] * cols["level_ratio"]
    # The baseline the model corrects (last season, denoised, blended with two seasons back,
    # times the shrunk level change), and where each target's last-season value comes from.
    base, src, src_dates = baseline_columns(grid, t, j, tdates, scale, spec)
    cols.update(base)
    cols["horizon"] = np.broadcast_to(hs.astype(float), (n, horizon))
    if spec.weekly_season:
        cols.update(_daily_columns(grid, t, j, ys, spec))
    marked = grid.dates[grid.holiday.astype(bool)]
    cal = calendar_features(
        tdates, _target_holidays(grid, j, tdates, spec), grid.freq, spec, marked
    )
    for c in cal.columns:
        cols[c] = np.broadcast_to(cal[c].to_numpy(), (n, horizon))
    for name, dd in (("month_start_days", tdates), ("month_start_days_src", src_dates)):
        cols[name] = np.broadcast_to(_month_start_days(dd, step), (n, horizon))
    cov_idx = jc if spec.future_covariates else np.full_like(jc, t - 1)
    for k, c in enumerate(grid.covariates):
        v = grid.cov[:, np.clip(cov_idx, 0, m - 1), k]
        v = np.where((j < m)[None, :] | (not spec.future_covariates), v, np.nan)
        cols[f"cov_{c}"] = v
        if c in spec.categorical:
            continue
        # Change since the season-source week (what last season's value was made under).
        cols[f"cov_{c}_yoy"] = v - known(grid.cov[:, :, k], src, t)
    target = np.where((j < m)[None, :], grid.y[:, jc], np.nan)
    for name in AUX_COLUMNS:  # not features: after them (see feature_names)
        cols[name] = cols.pop(name)
    return _assemble(grid, t, tdates, hs, scale, keep, target, cols)


def _month_start_days(labels: pd.DatetimeIndex, step: pd.Timedelta) -> np.ndarray:
    """Days of each period (ending at its label) that fall on days 1-7 of a month (paydays)."""
    days = step.days
    out = np.zeros(len(labels))
    for k in range(days):
        out += (labels - pd.Timedelta(days=k)).day <= 7
    return out


def _daily_columns(
    grid: Grid, t: int, j: np.ndarray, ys: np.ndarray, spec: FeatureSpec
) -> dict[str, np.ndarray]:
    """The weekly profile (matched on ``spec.profile_match``) and the days to/since a
    closure (from the open covariate) of every series and target index ``j``."""
    match = [grid.cov[:, :, grid.covariates.index(c)] for c in spec.profile_match]
    cols = weekly_profile(ys, t, j, spec.weekly_season, spec.profile_weeks, match)
    if spec.open_column is not None:
        open_ = grid.cov[:, :, grid.covariates.index(spec.open_column)]
        cols.update(closure_distances(open_, j))
    return cols


def daily_names(spec: FeatureSpec) -> list[str]:
    """The columns of :func:`_daily_columns` for ``spec``, in order."""
    if not spec.weekly_season:
        return []
    names = ["prof_last", "prof_med", "prof_mean", "prof_match_med", "prof_match_n"]
    names.append("prof_base")
    if spec.open_column is not None:
        names += ["days_to_closed", "days_since_closed"]
    return names


def _target_holidays(
    grid: Grid, j: np.ndarray, tdates: pd.DatetimeIndex, spec: FeatureSpec
) -> np.ndarray:
    inside = j < len(grid.dates)
    out = holiday_flags(tdates, grid.freq, spec.holidays)
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
    names += daily_names(spec)
    names += calendar_names(spec)
    names += ["month_start_days", "month_start_days_src"]
    for c in covariates:
        names += [f"cov_{c}"] + ([] if c in spec.categorical else [f"cov_{c}_yoy"])
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
