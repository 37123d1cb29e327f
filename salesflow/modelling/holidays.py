"""The whole panel's ``is_holiday`` per date, from the whole panel or from its shards.

Every shard's feature grid must flag the same dates as the whole panel's grid would
(:func:`panel_holidays`). A shard computes its :class:`HolidayPartial` (small: one value
per date) and :func:`combine_holidays` adds them up; shards hold disjoint series, so the
counts of series add up. Pure pandas: no Prefect, no Dask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.build import period_step
from salesflow.data.schema import DATE, HOLIDAY, ID, SalesData


@dataclass(frozen=True)
class HolidayPartial:
    """One shard's part of :func:`panel_holidays`: the maximum flag per date, its series
    with history, and per target date how many of them have a flag given."""

    flags: pd.Series
    n_series: int
    n_given: pd.Series


def holiday_partial(data: SalesData, origin: pd.Timestamp, horizon: int) -> HolidayPartial:
    """The flags given in ``data``'s history and in its future rows of the target dates
    (series with history before ``origin`` only)."""
    step = period_step(data.freq)
    known = data.as_of(origin - step)
    ids = known.history[ID].unique()
    targets = _targets(origin, horizon, data.freq)
    fut = known.future
    if len(fut):
        fut = fut[fut[DATE].isin(targets) & fut[ID].isin(ids)]
    cols = [ID, DATE, HOLIDAY]
    frames = [f[cols] for f in (known.history, fut) if HOLIDAY in f and len(f)]
    given = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    given = given.dropna(subset=[HOLIDAY])
    flags = given.groupby(DATE)[HOLIDAY].max().astype(bool)
    on_targets = given[given[DATE].isin(targets)].drop_duplicates([ID, DATE])
    n_given = on_targets.groupby(DATE).size().reindex(targets, fill_value=0)
    return HolidayPartial(flags, len(ids), n_given)


def combine_holidays(
    parts: list[HolidayPartial], origin: pd.Timestamp, horizon: int, freq: str
) -> pd.Series:
    """``is_holiday`` per date over every shard: the maximum of the flags given, and on a
    target date that some series lack, also the calendar's flag (what the covariate fill
    gives them)."""
    from features.calendar import is_holiday_period

    if len(parts) == 1:
        flags = parts[0].flags
    else:
        given = [p.flags for p in parts if len(p.flags)]
        flags = pd.concat(given).groupby(level=0).max().astype(bool) if given else parts[0].flags
    targets = _targets(origin, horizon, freq)
    n_given = np.sum([p.n_given.to_numpy() for p in parts], axis=0)
    short = targets[n_given < sum(p.n_series for p in parts)]
    flags = flags.reindex(flags.index.union(short), fill_value=False)
    flags.loc[short] = flags.loc[short].to_numpy() | is_holiday_period(short, freq)
    return flags


def panel_holidays(data: SalesData, origin: pd.Timestamp, horizon: int) -> pd.Series:
    """``is_holiday`` per date as the whole panel's grid takes it: the maximum over its
    series, and on a target date that some series lack, also the calendar's flag (what
    :func:`~salesflow.modelling.scoring.fill_future_covariates` gives them). A shard's grid
    then flags the same dates."""
    return combine_holidays([holiday_partial(data, origin, horizon)], origin, horizon, data.freq)


def _targets(origin: pd.Timestamp, horizon: int, freq: str) -> pd.DatetimeIndex:
    step = period_step(freq)
    return pd.DatetimeIndex([origin + step * h for h in range(horizon)])
