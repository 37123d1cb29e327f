"""Calendar facts known in advance for any date: the retail holidays and where they fall.

Easter moves by up to five weeks from year to year, so a same-week-last-year value can miss
it; ``easter`` gives its date for the features that realign it. The four holidays of the
Walmart data: Super Bowl (first Sunday of February until 2021,
second from 2022), Labor Day (first Monday of September), Thanksgiving (fourth Thursday of
November) and Christmas (25 December). For weekly data a holiday belongs to the period
that contains it, e.g. with ``W-FRI`` Christmas 2010 (a Saturday) is the week ending
2010-12-31, as in the Walmart files.
"""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
import pandas as pd

HOLIDAYS = ("super_bowl", "labor_day", "thanksgiving", "christmas")


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    first = dt.date(year, month, 1)
    offset = (weekday - first.weekday()) % 7
    return first + dt.timedelta(days=offset + 7 * (n - 1))


def holiday_dates(years: range | list[int]) -> pd.DataFrame:
    """Columns out: ``holiday`` (one of :data:`HOLIDAYS`), ``date`` (the day itself)."""
    rows = []
    for y in years:
        rows.append(("super_bowl", _nth_weekday(y, 2, 6, 1 if y <= 2021 else 2)))
        rows.append(("labor_day", _nth_weekday(y, 9, 0, 1)))
        rows.append(("thanksgiving", _nth_weekday(y, 11, 3, 4)))
        rows.append(("christmas", dt.date(y, 12, 25)))
    out = pd.DataFrame(rows, columns=["holiday", "date"])
    out["date"] = pd.to_datetime(out["date"])
    return out


def easter(year: int) -> dt.date:
    """Western (Gregorian) Easter Sunday of ``year`` (the anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return dt.date(year, month, day + 1)


def period_end(dates: pd.Series | pd.DatetimeIndex, freq: str) -> pd.DatetimeIndex:
    """The date that labels the period of ``freq`` containing each date (itself for daily)."""
    idx = pd.DatetimeIndex(dates)
    if freq == "D":
        return idx.normalize()
    return pd.DatetimeIndex(idx.to_period(freq).end_time.normalize())


def holiday_calendar(start: pd.Timestamp, end: pd.Timestamp, freq: str) -> pd.DataFrame:
    """Holiday periods between ``start`` and ``end``.

    Columns out: ``ds`` (period label), ``holiday`` (name), ``holiday_date`` (the day).
    A pure function of its arguments, kept for the few ranges a run asks for (a copy is
    returned, so callers may change it).
    """
    return _holiday_calendar(pd.Timestamp(start), pd.Timestamp(end), freq).copy()


@functools.lru_cache(maxsize=256)
def _holiday_calendar(start: pd.Timestamp, end: pd.Timestamp, freq: str) -> pd.DataFrame:
    hd = holiday_dates(range(pd.Timestamp(start).year - 1, pd.Timestamp(end).year + 2))
    hd["ds"] = period_end(hd["date"], freq)
    hd = hd.rename(columns={"date": "holiday_date"})
    mask = (hd["ds"] >= pd.Timestamp(start)) & (hd["ds"] <= pd.Timestamp(end))
    return hd.loc[mask, ["ds", "holiday", "holiday_date"]].reset_index(drop=True)


def is_holiday_period(dates: pd.Series | pd.DatetimeIndex, freq: str) -> np.ndarray:
    """Boolean array: does the period labelled by each date contain one of the holidays."""
    idx = pd.DatetimeIndex(dates)
    if len(idx) == 0:
        return np.zeros(0, dtype=bool)
    cal = holiday_calendar(idx.min(), idx.max(), freq)
    return np.asarray(idx.isin(cal["ds"]))


_OFFSETS = {"D": pd.Timedelta(days=1)}


def period_step(freq: str) -> pd.Timedelta:
    """One period of ``freq`` as a Timedelta (``W-*`` = 7 days, ``D`` = 1 day)."""
    return _OFFSETS.get(freq, pd.Timedelta(days=7))
