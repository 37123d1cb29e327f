"""Drift judgement with Evidently 0.7: do the latest covariates, sales or forecasts look unlike
what the champion was trained on?

Windows are counted in periods of ``data.freq``. The *current* window is the last
``current_periods`` of the data; the *reference* window the ``reference_periods`` ending at
the champion's ``trained_until`` (cut before the current window if they would overlap).
Each column is scored by Evidently's ``ValueDrift`` (``cfg.num_method``, ``cfg.threshold``):
a p-value method (ks, anderson) drifts when the value is below the threshold, a distance
when it is at or above it. The data drifts when ``>= cfg.min_drifted_columns`` columns or
``>= cfg.min_drifted_share`` of them drift.

Why two references, not one. On stable synthetic data (6 stores x 8 depts x 143 weeks,
seed 42, KS p < 0.05) the current 13 weeks against the 52 weeks before them flagged 4 of 9
covariates, a false alarm: temperature is seasonal (13 summer weeks never look like a whole
year), fuel price is a random walk, and markdowns start inside the reference window. The
same weeks a year earlier fix temperature but flag all five markdowns (their program
started since) and the trending CPI and unemployment. So a column drifts only when it
differs from *both* of two disjoint references:

* ``seasonal``: the current window's periods one season (52 weeks, 364 days) earlier,
  within the champion's training data, each store shifted by how much its level moved in a
  year (mean of the last ``current_periods`` training periods minus the same periods a year
  before): the seasonal-naive-with-drift baseline, so seasonality and steady trends are
  not drift;
* ``recent``: the rest of the reference window, so a change the champion already saw at
  the end of its training (e.g. markdowns having started) is not drift either.

An injected shift is new relative to both and is caught. Covariates recorded per store are
repeated for each department; they are counted once per (store, period) (the shortest key
prefix they are constant within), as eight copies would make a p-value far too confident.
Target drift uses the same two references on ``y`` scaled per series; prediction drift
compares two forecast sets directly.

Measured (KS p-values, seed 42, trained until 13 weeks before the end; the deciding one
of the two references):

* stable: temperature 0.91 (0.91 seasonal, 3e-9 recent), cpi 0.98, unemployment 0.23,
  markdown1-5 0.19-0.96, fuel_price 0.019: 1 of 9 columns drifted, no alarm;
* +2 std on temperature, fuel_price, cpi, unemployment from 13 weeks before the end:
  those four at p < 1e-16, markdowns unchanged: 4 of 9 (44 %), drift detected;
* over seeds 0-199: false alarms on 2.5 % of stable panels (5 of 200), every injected
  panel detected, 85 % of them on exactly the four shifted columns (else with one chance
  markdown flag). ``fuel_price``, one random walk shared by all stores, drifts on 87 % of
  stable panels: 13 periods of a random walk's levels cannot tell its wandering from a
  shift, and the ``>= 3`` columns rule absorbs it. Target drift (``y_scaled``, ~600
  values) flags 26 % of stable panels (seed 42: p = 0.22), every 10 % level shift.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from salesflow.config.settings import DriftSection
from salesflow.data.schema import DATE, ID, TARGET, SalesData
from salesflow.monitor.drift_result import P_VALUE_METHODS, ColumnDrift, ColumnShift, DriftResult
from salesflow.monitor.drift_shift import covariate_shift, sales_shift
from salesflow.monitor.drift_windows import (
    RECENT,
    SEASONAL,
    make_windows,
    owners,
    two_references,
    window,
)

__all__ = [
    "P_VALUE_METHODS",
    "RECENT",
    "SEASONAL",
    "ColumnDrift",
    "ColumnShift",
    "DriftResult",
    "detect_drift",
    "feature_drift",
    "prediction_drift",
    "run_report_dir",
    "save_report_html",
    "target_drift",
    "window",
]

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

_LABELS = {
    "ks": "KS p",
    "anderson": "Anderson-Darling p",
    "wasserstein": "normed Wasserstein distance",
    "psi": "PSI",
    "jensenshannon": "Jensen-Shannon distance",
    "kl_div": "KL divergence",
}
_SAMPLE_SEED = 0


# --- the Evidently comparison ---------------------------------------------------------------


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    cfg: DriftSection,
    kind: str = "feature",
) -> tuple[DriftResult, Snapshot]:
    """Compare ``columns`` (numeric) of ``current`` with ``reference``, rows taken as they are.

    Each side is sampled to ``cfg.max_rows`` (seeded). Columns that are all null or constant
    on both sides are skipped with a note. Raises ``ValueError`` naming columns missing from
    either frame, or when no column can be tested. Returns the result and Evidently snapshot.
    """
    _require({"reference": reference, "current": current}, columns)
    legs = {"reference": {c: reference[c] for c in columns}}
    return _compare(legs, {c: current[c] for c in columns}, cfg, kind, [])


def save_report_html(snapshot: Snapshot, path: Path) -> Path:
    """Write the snapshot as a self-contained HTML page (creating its folder); return path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path


def run_report_dir(
    report_dir: Path, data_date: Any, run_id: Any = None, at: dt.datetime | None = None
) -> Path:
    """The folder of one monitor run's HTML reports: ``<report_dir>/<data date>_<UTC time>_<run
    id>``, so a later run on the same data keeps this run's evidence (nothing is created)."""
    at = at or dt.datetime.now(dt.UTC)
    day = pd.Timestamp(data_date).strftime("%Y-%m-%d")
    return Path(report_dir) / f"{day}_{at.strftime('%Y%m%dT%H%M%SZ')}_{run_id or 'local'}"


def _require(frames: dict[str, pd.DataFrame], columns: list[str]) -> None:
    """ValueError naming, for every frame, the ``columns`` it lacks."""
    problems = [
        f"{missing} missing from the {what} frame (it has {list(frame.columns)})"
        for what, frame in frames.items()
        if (missing := [c for c in dict.fromkeys(columns) if c not in frame.columns])
    ]
    if problems:
        raise ValueError("column(s) " + "; ".join(problems))


def _clean(s: pd.Series, name: str, max_rows: int) -> pd.Series:
    if pd.api.types.is_bool_dtype(s):
        s = s.astype(float)
    if not pd.api.types.is_numeric_dtype(s):
        raise ValueError(f"column {name!r} is {s.dtype}; drift is checked on numeric columns")
    s = s.astype(float).replace([np.inf, -np.inf], np.nan).dropna()
    if len(s) > max_rows:
        s = s.sample(max_rows, random_state=_SAMPLE_SEED)
    return s.reset_index(drop=True)


def _untestable(ref: pd.Series, cur: pd.Series) -> str | None:
    if ref.empty:
        return "no reference values"
    if cur.empty:
        return "no current values"
    lo, hi = min(ref.min(), cur.min()), max(ref.max(), cur.max())
    return f"constant ({lo:g}) in both windows" if lo == hi else None


def _compare(
    legs: dict[str, dict[str, pd.Series]],
    current: dict[str, pd.Series],
    cfg: DriftSection,
    kind: str,
    notes: list[str],
) -> tuple[DriftResult, Snapshot]:
    """Score every (column, reference) pair in one Evidently report and decide."""
    cur = {c: _clean(s, c, cfg.max_rows) for c, s in current.items()}
    refs = {
        leg: {c: _clean(s, c, cfg.max_rows) for c, s in cols.items()} for leg, cols in legs.items()
    }
    for leg in [leg for leg, cols in refs.items() if all(s.empty for s in cols.values())]:
        if len(refs) > 1:
            notes.append(f"no {leg} reference in the data: judged on the others only")
            del refs[leg]
    pairs: dict[str, tuple[str, str]] = {}  # report column -> (column, reference)
    ref_cols: dict[str, pd.Series] = {}
    for col, c_values in cur.items():
        for leg, cols in refs.items():
            if why := _untestable(cols[col], c_values):
                notes.append(f"{col} vs {leg}: skipped, {why}")
                continue
            name = col if len(refs) == 1 else f"{col} vs {leg}"
            pairs[name], ref_cols[name] = (col, leg), cols[col]
    if not pairs:
        raise ValueError(f"no column could be tested for {kind} drift: {'; '.join(notes)}")
    snapshot, values = _run_report(ref_cols, {n: cur[c] for n, (c, _) in pairs.items()}, cfg)
    columns = _decide(pairs, values, cfg)
    n = sum(c.drifted for c in columns)
    return DriftResult(
        columns=columns,
        n_drifted=n,
        share_drifted=n / len(columns),
        detected=n >= cfg.min_drifted_columns or n / len(columns) >= cfg.min_drifted_share,
        reference_rows=max(sum(len(refs[leg][c]) for leg in refs) for c in cur),
        current_rows=max(len(s) for s in cur.values()),
        kind=kind,
        rule=_rule(cfg, list(refs), len(cur)),
        references=list(refs),
        notes=notes,
    ), snapshot


def _run_report(
    ref_cols: dict[str, pd.Series], cur_cols: dict[str, pd.Series], cfg: DriftSection
) -> tuple[Snapshot, dict[str, float]]:
    """One ``ValueDrift`` per column; columns of unequal length are padded with NaN, which
    Evidently drops per column."""
    from evidently import DataDefinition, Dataset, Report  # ~3 s: only when a check runs
    from evidently.metrics import ValueDrift

    names = list(ref_cols)
    definition = DataDefinition(numerical_columns=names)
    report = Report(
        [ValueDrift(column=n, method=cfg.num_method, threshold=cfg.threshold) for n in names]
    )
    with warnings.catch_warnings():
        # Evidently's anderson calls scipy's deprecated form; its p is clamped to [0.001, 0.25].
        warnings.filterwarnings("ignore", message=r"Parameter `variant`", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"p-value (floored|capped)", category=UserWarning)
        snapshot = report.run(
            current_data=Dataset.from_pandas(pd.DataFrame(cur_cols), data_definition=definition),
            reference_data=Dataset.from_pandas(pd.DataFrame(ref_cols), data_definition=definition),
        )
    values = {
        m["config"]["column"]: float(m["value"])
        for m in snapshot.dict()["metrics"]
        if str(m["config"].get("type", "")).endswith("ValueDrift")
    }
    return snapshot, values


def _is_drift(value: float, cfg: DriftSection) -> bool:
    if cfg.num_method in P_VALUE_METHODS:
        return bool(value < cfg.threshold)
    return bool(value >= cfg.threshold)


def _decide(
    pairs: dict[str, tuple[str, str]], values: dict[str, float], cfg: DriftSection
) -> list[ColumnDrift]:
    """A column drifts when it drifts against every reference: the least drifted decides."""
    scores: dict[str, dict[str, float]] = {}
    for name, (col, leg) in pairs.items():
        scores.setdefault(col, {})[leg] = values[name]
    out = []
    for col, by_leg in scores.items():
        finite = [v for v in by_leg.values() if np.isfinite(v)]
        pick = max if cfg.num_method in P_VALUE_METHODS else min
        score = pick(finite) if finite else float("nan")
        out.append(
            ColumnDrift(col, cfg.num_method, cfg.threshold, score, _is_drift(score, cfg), by_leg)
        )
    return out


def _rule(cfg: DriftSection, references: list[str], n_columns: int) -> str:
    op = "<" if cfg.num_method in P_VALUE_METHODS else ">="
    test = f"{_LABELS.get(cfg.num_method, cfg.num_method)} {op} {cfg.threshold:g}"
    if n_columns == 1:
        rule = f"drift when the column drifts ({test})"
    else:
        rule = (
            f"drift when >= {cfg.min_drifted_columns} columns or "
            f">= {cfg.min_drifted_share:.0%} drift ({test})"
        )
    if len(references) > 1:
        rule += f"; a column drifts when it differs from every reference ({', '.join(references)})"
    return rule


# --- the three checks -----------------------------------------------------------------------


def feature_drift(
    data: SalesData, champion_trained_until: Any, cfg: DriftSection
) -> tuple[DriftResult, Snapshot]:
    """Drift of ``cfg.columns`` (default: the covariates) in the last ``cfg.current_periods``
    against the seasonal and recent references (module docstring)."""
    columns = list(cfg.columns or data.covariates)
    if not columns:
        raise ValueError("no columns to check: set monitor.drift.columns or add covariates")
    _require({"history": data.history}, columns)
    notes: list[str] = []
    w = make_windows(data, champion_trained_until, cfg, notes)
    used = data.history[w.masks(data.history[DATE])["any"]]
    owner = owners(used, data.keys, columns)
    legs: dict[str, dict[str, pd.Series]] = {SEASONAL: {}, RECENT: {}}
    current, shifts = {}, {}
    for col in columns:
        obs = used[[*owner[col], DATE, col]].drop_duplicates([*owner[col], DATE])
        refs, current[col] = two_references(obs, owner[col], col, w)
        for leg, values in refs.items():
            legs[leg][col] = values
        in_ref = obs.loc[w.masks(obs[DATE])["reference"], col]
        group = owner[col][0] if owner[col] else None
        shifts[col] = covariate_shift(obs, col, group, refs[SEASONAL], current[col], in_ref)
    result, snapshot = _compare(legs, current, cfg, "feature", notes)
    return _with_shifts(result, shifts, w, cfg), snapshot


def _with_shifts(
    result: DriftResult, shifts: dict[str, ColumnShift], w: Any, cfg: DriftSection
) -> DriftResult:
    """``result`` with how much each column moved and what that was measured against."""
    result.shifts = shifts
    result.comparison = (
        f"mean of the last {cfg.current_periods} periods up to "
        f"{w.intervals['current'][1].date()} vs the same periods a season earlier, adjusted "
        "for the trend the champion saw"
    )
    if any(s.sigma is not None for s in shifts.values()):
        result.comparison += (
            f"; σ = spread over the champion's last {cfg.reference_periods} training periods"
        )
    return result


def target_drift(
    data: SalesData, champion_trained_until: Any, cfg: DriftSection
) -> tuple[DriftResult, Snapshot]:
    """Drift of ``y_scaled`` = y / the series' mean |y| in the reference window, with the
    same windows and references as :func:`feature_drift`."""
    notes: list[str] = []
    w = make_windows(data, champion_trained_until, cfg, notes)
    hist = data.history
    group = data.keys[0] if data.keys else None
    obs = hist.loc[
        w.masks(hist[DATE])["any"], list(dict.fromkeys([ID, *data.keys[:1], DATE, TARGET]))
    ]
    ref = obs[w.masks(obs[DATE])["reference"]]
    scale = ref[TARGET].abs().groupby(ref[ID]).mean()
    obs = obs.assign(y_scaled=obs[TARGET] / obs[ID].map(scale.where(scale > 0)))
    if n_lost := int(obs.loc[obs["y_scaled"].isna(), ID].nunique()):
        notes.append(f"{n_lost} series without sales in the reference window left out")
    obs = obs.dropna(subset=["y_scaled"])
    refs, current = two_references(obs, [ID], "y_scaled", w)
    target_cfg = cfg.model_copy(
        update={"num_method": cfg.target_method, "threshold": cfg.target_threshold}
    )
    result, snapshot = _compare(
        {k: {"y_scaled": v} for k, v in refs.items()},
        {"y_scaled": current},
        target_cfg,
        "target",
        notes,
    )
    raw, raw_current = two_references(obs, [ID], TARGET, w)
    shift = sales_shift(obs, obs[ID], group, raw[SEASONAL], raw_current)
    return _with_shifts(result, {"y_scaled": shift}, w, cfg), snapshot


def prediction_drift(
    reference_forecasts: pd.DataFrame, current_forecasts: pd.DataFrame, cfg: DriftSection
) -> tuple[DriftResult, Snapshot]:
    """Drift of ``forecast`` between two forecast sets (warehouse layout: ``unique_id``,
    ``forecast``), each scaled by the series' mean |forecast| in ``reference_forecasts``.
    Series of the current set absent from the reference are left out with a note."""
    frames = {"reference forecasts": reference_forecasts, "current forecasts": current_forecasts}
    _require(frames, [ID, "forecast"])
    ref = reference_forecasts
    scale = ref["forecast"].abs().groupby(ref[ID]).mean()
    scale = scale.where(scale > 0)
    notes: list[str] = []
    cur_scale = current_forecasts[ID].map(scale)
    if n_lost := int(current_forecasts.loc[cur_scale.isna(), ID].nunique()):
        notes.append(f"{n_lost} series without a reference forecast left out")
    legs = {"reference": {"forecast_scaled": ref["forecast"] / ref[ID].map(scale)}}
    current = {"forecast_scaled": current_forecasts["forecast"] / cur_scale}
    return _compare(legs, current, cfg, "prediction", notes)
