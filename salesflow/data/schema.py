"""The canonical shape of sales data inside salesflow, shared by every source and step.

Every source returns a :class:`SalesData`:

``history`` — one row per (series, date) with an observed target:
    ``unique_id`` (str, the series keys joined by "/", with "%" and "/" inside a key
    escaped as "%25" and "%2F": see :func:`make_unique_id`), the key columns (e.g. ``store``,
    ``dept``), ``ds`` (datetime64[ns], the period's date), ``y`` (float, the target),
    ``is_holiday`` (bool), one float column per covariate, one text column per categorical
    covariate (stripped strings, missing = NaN), one column per static attribute (constant
    within a series), in that order.

``future`` — the covariates known for dates after the last observation (same columns as
    ``history`` without ``y``); may be empty when the source knows no future covariates.

``known_ahead`` names the covariates and categorical columns that must be known for every
target date (from the data or a future file; never carried forward); ``open`` names the
numeric covariate that is 1 when the store is open and 0 when it is closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd

ID, DATE, TARGET, HOLIDAY = "unique_id", "ds", "y", "is_holiday"


@dataclass(frozen=True)
class SalesData:
    history: pd.DataFrame
    future: pd.DataFrame
    keys: list[str]
    covariates: list[str] = field(default_factory=list)
    static: list[str] = field(default_factory=list)
    freq: str = "W-FRI"
    source: str = "unknown"
    categorical: list[str] = field(default_factory=list)
    known_ahead: list[str] = field(default_factory=list)
    open: str | None = None

    @property
    def n_series(self) -> int:
        return int(self.history[ID].nunique())

    @property
    def last_date(self) -> pd.Timestamp:
        return pd.Timestamp(self.history[DATE].max())

    def as_of(self, date: pd.Timestamp | str | None) -> SalesData:
        """Cut the data at ``date``: observations after it become unknown.

        Their covariates and categorical columns move to ``future`` (they are known ahead,
        the target is not).
        """
        if date is None:
            return self
        cut = pd.Timestamp(date)
        later = self.history[self.history[DATE] > cut]
        future = pd.concat(
            [later.drop(columns=[TARGET]), self.future], ignore_index=True
        ).drop_duplicates([ID, DATE], keep="first")
        return replace(
            self,
            history=self.history[self.history[DATE] <= cut].reset_index(drop=True),
            future=future.sort_values([ID, DATE]).reset_index(drop=True),
        )

    def static_frame(self) -> pd.DataFrame:
        """One row per series: ``unique_id``, the keys and the static attributes."""
        cols = [ID, *self.keys, *self.static]
        return self.history.drop_duplicates(ID, keep="last")[cols].reset_index(drop=True)


def make_unique_id(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Join the key columns into the ``unique_id`` string, e.g. store 1, dept 7 -> "1/7".

    Inside a key value "%" becomes "%25" and "/" becomes "%2F", so two different key tuples
    never share an id (store "1/2", dept 3 -> "1%2F2/3"; store 1, dept "2/3" -> "1/2%2F3")
    while ids of keys without those characters stay as they always were.
    """
    out = _key_text(frame[keys[0]])
    for k in keys[1:]:
        out = out + "/" + _key_text(frame[k])
    return out


def _key_text(values: pd.Series) -> pd.Series:
    if values.isna().any():  # None and NaN keep their own spellings ("None", "nan")
        return _escaped(values.astype(str))
    # Keys repeat on every row of their series: convert each distinct value once.
    codes, uniques = pd.factorize(values)
    text = _escaped(pd.Series(uniques).astype(str))
    return pd.Series(text.to_numpy(dtype=object)[codes], index=values.index, name=values.name)


def _escaped(text: pd.Series) -> pd.Series:
    if text.str.contains("[%/]", regex=True).any():
        text = text.str.replace("%", "%25", regex=False).str.replace("/", "%2F", regex=False)
    return text
