"""Which dates are holidays, as configured: the US retail calendar of the Walmart data, a
country's public holidays from the maintained ``holidays`` library, or none (then only the
data's own holiday column says). Pure functions of the dates: nothing here reads sales.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from features.calendar import HOLIDAYS, is_holiday_period, period_end

CALENDARS = ("us_retail", "none")


@dataclass(frozen=True)
class HolidaySpec:
    """``calendar``: ``us_retail`` (Super Bowl, Labor Day, Thanksgiving, Christmas, with their
    own features) or ``none``; ``country`` (ISO code such as ``DE``) and ``subdiv`` (a state
    or province code): public holidays from the ``holidays`` library, added to the flags."""

    calendar: str = "us_retail"
    country: str | None = None
    subdiv: str | None = None

    @property
    def us_retail(self) -> bool:
        return self.calendar == "us_retail"


@lru_cache(maxsize=32)
def country_days(country: str, subdiv: str | None, first: int, last: int) -> pd.DatetimeIndex:
    """Public holidays of ``country`` (``subdiv``) for the years ``first``..``last``."""
    import holidays

    try:
        cal = holidays.country_holidays(country, subdiv=subdiv, years=range(first, last + 1))
    except NotImplementedError as exc:  # the library's error for an unknown country code
        raise ValueError(
            f"features.holidays.country {country!r} (subdiv {subdiv!r}) is not a calendar of "
            f"the holidays library: {exc}"
        ) from None
    return pd.DatetimeIndex(sorted(pd.Timestamp(d) for d in cal))


def holiday_flags(dates: pd.DatetimeIndex, freq: str, spec: HolidaySpec) -> np.ndarray:
    """Per date (a period label): does the period hold a configured holiday."""
    idx = pd.DatetimeIndex(dates)
    flags = np.zeros(len(idx), dtype=bool)
    if len(idx) == 0:
        return flags
    if spec.us_retail:
        flags |= is_holiday_period(idx, freq)
    if spec.country:
        days = country_days(spec.country, spec.subdiv, idx.min().year - 1, idx.max().year + 1)
        flags |= np.asarray(idx.isin(period_end(days, freq)))
    return flags


def distance_features(
    dates: pd.DatetimeIndex, marked: pd.DatetimeIndex, name: str, cap: float = 30.0
) -> dict[str, np.ndarray]:
    """``days_to_<name>`` and ``days_since_<name>``: days from each date to the next marked
    date on or after it and from the last one on or before it, capped at ``cap``."""
    d = dates.to_numpy()
    m = np.sort(marked.to_numpy())
    if len(m) == 0:
        return {f"days_to_{name}": np.full(len(d), cap), f"days_since_{name}": np.full(len(d), cap)}
    nxt = np.searchsorted(m, d, side="left")
    prv = np.searchsorted(m, d, side="right") - 1
    day = np.timedelta64(1, "D")
    to = np.where(nxt < len(m), (m[np.minimum(nxt, len(m) - 1)] - d) / day, cap)
    since = np.where(prv >= 0, (d - m[np.maximum(prv, 0)]) / day, cap)
    return {
        f"days_to_{name}": np.minimum(to, cap).astype(float),
        f"days_since_{name}": np.minimum(since, cap).astype(float),
    }


def country_features(dates: pd.DatetimeIndex, freq: str, spec: HolidaySpec) -> dict:
    """Country calendar facts of each target date: holiday flag, days to/since one."""
    if not spec.country:
        return {}
    days = country_days(spec.country, spec.subdiv, dates.min().year - 1, dates.max().year + 1)
    out = {"country_holiday": np.asarray(dates.isin(period_end(days, freq)), dtype=float)}
    out.update(distance_features(dates, days, "country_holiday"))
    return out


def feature_names(spec: HolidaySpec) -> list[str]:
    """Holiday feature columns of :func:`features.build.calendar_features`, in order."""
    names = []
    if spec.us_retail:
        names += [f"hol_{h}" for h in HOLIDAYS]
        names += ["days_to_thanksgiving", "days_to_christmas"]
    if spec.country:
        names += ["country_holiday", "days_to_country_holiday", "days_since_country_holiday"]
    return names
