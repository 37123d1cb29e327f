"""The windows drift is judged on (see :mod:`salesflow.drift` for why two references).

Counted in periods of ``data.freq``: the *current* window is the last ``current_periods``
of the data; the *reference* window the ``reference_periods`` ending at the champion's
``trained_until`` (cut before the current window if they would overlap), split into the
``seasonal`` reference (the current window's periods one season earlier, level-adjusted)
and the ``recent`` one (the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from salesflow.config.settings import DriftSection
from salesflow.data.schema import DATE, SalesData

SEASONAL, RECENT = "seasonal", "recent"


def period_of(freq: str) -> tuple[pd.Timedelta, int]:
    """One period of ``freq`` and the season length in periods (weekday-aligned for days)."""
    offset = pd.tseries.frequencies.to_offset(freq)
    if isinstance(offset, pd.offsets.Week):
        return pd.Timedelta(weeks=1), 52
    if isinstance(offset, pd.offsets.Day):
        return pd.Timedelta(days=1), 364
    raise ValueError(
        f"drift windows support weekly ('W-FRI', ...) and daily ('D') data, got {freq!r}"
    )


def window(data: SalesData, end: pd.Timestamp, periods: int) -> pd.DataFrame:
    """History rows of the ``periods`` periods ending at ``end`` (inclusive); same columns."""
    if periods < 1:
        raise ValueError(f"periods must be >= 1, got {periods}")
    step, _ = period_of(data.freq)
    end = pd.Timestamp(end)
    ds = data.history[DATE]
    return data.history[(ds > end - periods * step) & (ds <= end)].reset_index(drop=True)


@dataclass(frozen=True)
class Windows:
    """Half-open date intervals ``(lo, hi]`` of the current window and the two references."""

    intervals: dict[str, tuple[pd.Timestamp, pd.Timestamp]]

    def masks(self, ds: pd.Series) -> dict[str, np.ndarray]:
        out = {k: ((ds > lo) & (ds <= hi)).to_numpy() for k, (lo, hi) in self.intervals.items()}
        out[RECENT] = out["reference"] & ~out[SEASONAL]
        out["any"] = np.logical_or.reduce(list(out.values()))
        return out


def make_windows(
    data: SalesData, trained_until: Any, cfg: DriftSection, notes: list[str]
) -> Windows:
    step, season = period_of(data.freq)
    last, trained = data.last_date, pd.Timestamp(trained_until)
    cur_lo = last - cfg.current_periods * step
    ref_end = min(trained, cur_lo)
    if ref_end < trained:
        notes.append(
            f"champion trained until {trained.date()}, inside the current window: "
            f"reference cut at {ref_end.date()}"
        )
    if data.history[DATE].min() > ref_end:
        raise ValueError(f"no reference data: it would end at {ref_end.date()}, before the data")
    year, n = season * step, cfg.current_periods * step
    return Windows(
        {
            "current": (cur_lo, last),
            "reference": (ref_end - cfg.reference_periods * step, ref_end),
            SEASONAL: (cur_lo - year, min(last - year, ref_end)),
            "now": (ref_end - n, ref_end),
            "then": (ref_end - n - year, ref_end - year),
        }
    )


def _level_change(
    obs: pd.DataFrame, owner: list[str], col: str, m: dict[str, np.ndarray]
) -> np.ndarray:
    """Per row: its owner's level change over a season (0 where unknown)."""
    if not owner:
        change = obs.loc[m["now"], col].mean() - obs.loc[m["then"], col].mean()
        return np.full(len(obs), 0.0 if np.isnan(change) else change)
    now = obs[m["now"]].groupby(owner)[col].mean()
    then = obs[m["then"]].groupby(owner)[col].mean()
    keys = pd.MultiIndex.from_frame(obs[owner]) if len(owner) > 1 else pd.Index(obs[owner[0]])
    return (now - then).reindex(keys).fillna(0.0).to_numpy()


def two_references(
    obs: pd.DataFrame, owner: list[str], col: str, w: Windows
) -> tuple[dict[str, pd.Series], pd.Series]:
    """The level-adjusted seasonal reference, the recent reference and the current values."""
    m = w.masks(obs[DATE])
    adjusted = obs[col] + _level_change(obs, owner, col, m)
    refs = {SEASONAL: adjusted[m[SEASONAL]], RECENT: obs.loc[m[RECENT], col]}
    return refs, obs.loc[m["current"], col]


def owners(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> dict[str, list[str]]:
    """Per column: the shortest prefix of ``keys`` it is constant within on each date."""
    out: dict[str, list[str]] = {}
    for i in range(len(keys) + 1):
        by = [*keys[:i], DATE]
        groups = len(frame[by].drop_duplicates())
        for col in columns:
            if col not in out and len(frame[[*by, col]].drop_duplicates()) == groups:
                out[col] = list(keys[:i])
    return out | {c: list(keys) for c in columns if c not in out}
