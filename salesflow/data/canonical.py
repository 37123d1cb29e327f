"""Shape any frame into the canonical columns and dtypes of :mod:`salesflow.schema`.

Shared by the sources (:mod:`salesflow.sources`) and the generator
(:mod:`salesflow.synthetic`) so that every source hands on the same contract.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from salesflow.data.schema import DATE, HOLIDAY, ID, TARGET, make_unique_id
from salesflow.errors import UserError

WALMART_KEYS = ["store", "dept"]
WALMART_COVARIATES = [
    "temperature",
    "fuel_price",
    "markdown1",
    "markdown2",
    "markdown3",
    "markdown4",
    "markdown5",
    "cpi",
    "unemployment",
]
WALMART_STATIC = ["store_type", "store_size"]
RESERVED = (ID, DATE, TARGET, HOLIDAY)


class SourceError(UserError, ValueError):
    """The data (file, folder, table, column mapping) cannot be read as configured; the
    message names the file, column or setting to fix. A user error: never retried."""


class SourceNotFound(SourceError, FileNotFoundError):
    """The configured data file or folder does not exist."""


_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def require_columns(frame: pd.DataFrame, needed: list[str], what: str) -> None:
    """SourceError naming the ``needed`` columns absent from ``frame`` and those present."""
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise SourceError(
            f"{what}: missing column(s) {missing}; columns present: {list(frame.columns)}. "
            "Fix the column mapping (data.long) or the file."
        )


def to_dates(values: pd.Series, name: str, fmt: str | None = None) -> pd.Series:
    """Parse ``values`` as naive ``datetime64[ns]`` (tz-aware values are converted to UTC)."""
    try:
        if ptypes.is_datetime64_any_dtype(values) or fmt is None:
            out = pd.to_datetime(values)
        else:
            out = pd.to_datetime(values, format=fmt)
    except (ValueError, TypeError) as exc:
        how = f" with format {fmt!r}" if fmt else ""
        # pandas appends a paragraph of advice about its own arguments: keep the first sentence.
        why = str(exc).split(". You might want to try")[0]
        raise SourceError(
            f"column {name!r}: cannot parse dates{how}: {why}; set data.long.date_format "
            "(e.g. '%d/%m/%Y') or fix the file"
        ) from exc
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_convert(None)
    return out.astype("datetime64[ns]")


def to_bool(values: pd.Series, name: str) -> pd.Series:
    """Booleans from bool, 0/1 or text (TRUE/false/yes/...); missing values count as False."""
    if ptypes.is_bool_dtype(values):
        return values.fillna(False).astype(bool)
    if ptypes.is_numeric_dtype(values):
        return values.fillna(0).ne(0).astype(bool)
    text = values.astype("string").str.strip().str.lower()
    bad = text.notna() & ~text.isin(_TRUE | _FALSE)
    if bad.any():
        sample = sorted(set(values[bad].astype(str)))[:5]
        raise SourceError(
            f"column {name!r}: cannot read {sample} as booleans; use TRUE/FALSE or 1/0 "
            "(or map another column with data.long.holiday, or null to use the calendar)"
        )
    return text.isin(_TRUE).fillna(False).astype(bool)


def to_text(values: pd.Series) -> pd.Series:
    """Category labels: stripped strings (object dtype), missing and empty values as NaN.

    Whole numbers lose their ``.0`` so 0, 0.0 and "0" are one label (CSV readers mix them).
    """
    # Labels are few: convert each distinct value once, then index (1 M rows in ~0.1 s).
    codes, uniques = pd.factorize(values)
    distinct = pd.Series(uniques)
    if ptypes.is_numeric_dtype(distinct) and not ptypes.is_bool_dtype(distinct):
        num = distinct.astype("float64")
        whole = bool((num == num.round()).all())
        text = (num.astype("Int64") if whole else num).astype("string")
    else:
        text = distinct.astype("string").str.strip()
    labels = text.mask(text == "").to_numpy(dtype=object, na_value=np.nan)
    table = np.append(labels, np.nan).astype(object)  # code -1 (missing) -> the last: NaN
    return pd.Series(table[codes], index=values.index, name=values.name)


def holiday_flag(values: pd.Series, name: str, none_codes: list[str] | None) -> pd.Series:
    """``is_holiday`` from a flag column (``none_codes`` None: see :func:`to_bool`) or a code
    column: True where the code (as stripped text) is not one of ``none_codes``; missing
    values count as False."""
    if none_codes is None:
        return to_bool(values, name)
    text = to_text(values)
    return (text.notna() & ~text.isin([str(c).strip() for c in none_codes])).astype(bool)


def no_repeats(frame: pd.DataFrame, keys: list[str], what: str) -> None:
    """SourceError when ``keys`` repeat (a join on them would duplicate or refuse rows)."""
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        first = frame.loc[dup, keys].iloc[0].astype(str).to_dict()
        raise SourceError(
            f"{what}: {int(frame.duplicated(keys).sum())} repeated rows for the same {keys} "
            f"(e.g. {first}); keep one row per {keys}"
        )


def to_floats(values: pd.Series, name: str) -> pd.Series:
    """``float64`` from any numeric column; SourceError naming the column otherwise."""
    try:
        return pd.to_numeric(values, errors="raise").astype("float64")
    except (ValueError, TypeError) as exc:
        raise SourceError(f"column {name!r} must be numeric: {exc}") from exc


def canonical_frame(
    frame: pd.DataFrame,
    keys: list[str],
    covariates: list[str],
    static: list[str],
    *,
    target: bool = True,
    categorical: list[str] | None = None,
) -> pd.DataFrame:
    """The canonical history (``target=True``) or future frame, sorted by unique_id, ds.

    Columns in: ``keys``, ``ds``, ``y`` (if ``target``), ``is_holiday``, ``covariates``,
    ``categorical``, ``static``. Columns out, in this order: ``unique_id``, keys, ``ds``
    (datetime64[ns]), ``y`` (float64), ``is_holiday`` (bool), covariates (float64),
    categorical (text, see :func:`to_text`), static (as read).
    """
    categorical = list(categorical or [])
    cols = [
        *keys,
        DATE,
        *([TARGET] if target else []),
        HOLIDAY,
        *covariates,
        *categorical,
        *static,
    ]
    require_columns(frame, cols, "canonical frame")
    columns = {c: frame[c] for c in cols}
    columns[DATE] = to_dates(frame[DATE], DATE)
    if target:
        columns[TARGET] = to_floats(frame[TARGET], TARGET)
    columns[HOLIDAY] = to_bool(frame[HOLIDAY], HOLIDAY)
    for col in covariates:
        columns[col] = to_floats(frame[col], col)
    for col in categorical:
        columns[col] = to_text(frame[col])
    ids = make_unique_id(frame, keys)
    # Sorting integer codes is ~10x faster than sorting the id strings themselves.
    codes, _ = pd.factorize(ids, sort=True)
    order = np.lexsort((columns[DATE].to_numpy(), codes))
    # One frame built from the sorted columns: setting them one by one on a copy makes
    # pandas re-consolidate its blocks (seconds on a million rows with text columns).
    return pd.DataFrame(
        {c: s.take(order).reset_index(drop=True) for c, s in {ID: ids, **columns}.items()}
    )
