"""Frame <-> database values for :mod:`salesflow.sqlstore`: validation against a Table and
fast, vectorised conversion to driver-ready values (and back)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

Values = list[list[Any]]  # one list of driver-ready values per column


def qualified(table: sa.Table) -> str:
    """``schema.name`` or ``name``."""
    return f"{table.schema}.{table.name}" if table.schema else table.name


def prepare_frame(
    frame: pd.DataFrame, table: sa.Table, key: list[str], dialect: str
) -> tuple[list[str], Values]:
    """Validate ``frame`` against ``table`` and return its column names and DB-ready values."""
    where = f"for table {qualified(table)}"
    if extra := [c for c in frame.columns if c not in table.c]:
        raise ValueError(f"frame has column(s) {extra} that are not in the table {where}")
    required = [c.name for c in table.columns if not c.nullable or c.name in key]
    if missing := [c for c in required if c not in frame.columns]:
        raise ValueError(f"frame lacks required column(s) {missing} {where}")
    for name in required:
        if n_null := int(frame[name].isna().sum()):
            first = frame.index[frame[name].isna().to_numpy()][0]
            raise ValueError(
                f"column {name!r} has {n_null} null value(s) (first at index {first!r}); "
                f"it may not be null {where}"
            )
    names = [c.name for c in table.columns if c.name in frame.columns]
    values = [db_values(frame[n], table.c[n], dialect) for n in names]
    keys = pd.DataFrame({k: values[names.index(k)] for k in key})
    if (dup := keys.duplicated(keep=False)).any():
        example = keys[dup].iloc[0].to_dict()
        raise ValueError(
            f"{int(dup.sum())} rows share their key {key} with another row (e.g. {example}); "
            "each key may appear once in a write"
        )
    return names, values


def db_values(s: pd.Series, column: sa.Column, dialect: str) -> list[Any]:
    """One column as a list of driver-ready Python values (None for nulls)."""
    try:
        return convert(s, column.type, dialect)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"column {column.name!r} cannot be stored as {column.type}: {exc}"
        ) from None


def convert(s: pd.Series, kind: sa.types.TypeEngine, dialect: str) -> list[Any]:
    null = s.isna().to_numpy()
    if isinstance(kind, sa.DateTime):
        ts = _datetimes(s)
        ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
        if dialect == "sqlite":  # SQLAlchemy's SQLite DATETIME format, naive UTC
            ts = ts.dt.tz_convert(None)
            return _by_uniques(ts, null, lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f"))
        return _by_uniques(ts, null, lambda t: t.to_pydatetime())
    if isinstance(kind, sa.Date):
        ts = _datetimes(s)
        if ts.dt.tz is not None:
            ts = ts.dt.tz_localize(None)
        days = ts.to_numpy(dtype="datetime64[D]")
        out = (np.datetime_as_string(days) if dialect == "sqlite" else days).astype(object)
    elif isinstance(kind, sa.Integer):
        num = pd.to_numeric(s)
        if (num.dropna() % 1 != 0).any():
            raise ValueError("has non-integer values")
        out = num.astype("Int64").astype(object).to_numpy()
    elif isinstance(kind, sa.Float):
        out = pd.to_numeric(s).to_numpy(dtype="float64", na_value=np.nan).astype(object)
    elif isinstance(kind, sa.Boolean):
        out = s.astype(object).to_numpy()
    else:
        if s.dtype.kind == "f" and (s.dropna() % 1 == 0).all():
            s = s.astype("Int64")  # 1.0 -> "1": integer keys that pandas widened to float
        out = s.astype(str).to_numpy(dtype=object)
    out[null] = None
    return out.tolist()


def _datetimes(s: pd.Series) -> pd.Series:
    # to_datetime on a datetime64 column still iterates it (format cache): skip it.
    return s if s.dtype.kind == "M" else pd.to_datetime(s)


def _by_uniques(ts: pd.Series, null: np.ndarray, fmt: Any) -> list[Any]:
    codes, uniques = pd.factorize(ts)
    table = np.array([fmt(u) for u in uniques] + [None], dtype=object)
    return table[np.where(null, len(uniques), codes)].tolist()


def from_db(s: pd.Series, kind: sa.types.TypeEngine) -> pd.Series:
    if isinstance(kind, sa.DateTime):
        return pd.to_datetime(s, utc=True)
    if isinstance(kind, sa.Date):
        return pd.to_datetime(s).astype("datetime64[ns]")
    if isinstance(kind, sa.Integer):
        return s.astype("int64") if s.notna().all() else s.astype("Int64")
    if isinstance(kind, sa.Float):
        return s.astype("float64")
    return s.astype(object)


def bind(value: Any, kind: sa.types.TypeEngine) -> Any:
    if isinstance(kind, sa.DateTime):
        return pd.Timestamp(value).to_pydatetime()
    if isinstance(kind, sa.Date):
        return pd.Timestamp(value).date()
    return value
