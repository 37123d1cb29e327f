"""Every data source behind one interface: each returns a canonical :class:`SalesData`.

Sources: the seeded generator (``synthetic``), the Kaggle Walmart Recruiting folder
(``walmart``), a generic long-format file (``long``) and a SQL table or query (``sql``).
History and future frames follow :mod:`salesflow.schema`: ``unique_id``, the keys, ``ds``
(datetime64[ns]), ``y`` (float64, history only), ``is_holiday`` (bool), the covariates
(float64) and the static columns, sorted by ``unique_id``, ``ds``. Nothing here does I/O
at import time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from salesflow.config.identifiers import IDENTIFIER
from salesflow.config.settings import DataSection, LongFormatSection
from salesflow.data.canonical import (
    WALMART_COVARIATES,
    WALMART_KEYS,
    WALMART_STATIC,
    SourceError,
    SourceNotFound,
    canonical_frame,
    no_repeats,
    require_columns,
    to_dates,
)
from salesflow.data.datafiles import read_table_file, require_header
from salesflow.data.long_format import (
    check_long_files,
    load_long,
    long_files,
    read_side_files,
    sales_from_long,
)
from salesflow.data.schema import DATE, HOLIDAY, TARGET, SalesData
from salesflow.data.synthetic import generate_sales
from salesflow.errors import is_transient, redact

__all__ = [
    "check_source_files",
    "load_long",
    "load_sales",
    "load_sql",
    "load_walmart",
    "read_table_file",
    "sales_from_long",
    "walmart_file",
]

_WALMART_NAMES = {
    "Store": "store",
    "Dept": "dept",
    "Date": DATE,
    "Weekly_Sales": TARGET,
    "IsHoliday": HOLIDAY,
    "Temperature": "temperature",
    "Fuel_Price": "fuel_price",
    **{f"MarkDown{i}": f"markdown{i}" for i in range(1, 6)},
    "CPI": "cpi",
    "Unemployment": "unemployment",
    "Type": "store_type",
    "Size": "store_size",
}


# --- Walmart Recruiting (Kaggle) ------------------------------------------------------

_WALMART_NEEDED = {
    "train": [*WALMART_KEYS, DATE, TARGET, HOLIDAY],
    "features": ["store", DATE, HOLIDAY, *WALMART_COVARIATES],
    "stores": ["store", *WALMART_STATIC],
}


def walmart_file(folder: Path, stem: str) -> Path:
    """``<stem>.csv`` (or zipped / gzipped) in a Walmart folder; SourceNotFound naming it."""
    for suffix in (".csv", ".csv.zip", ".csv.gz", ".zip"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    found = sorted(p.name for p in folder.iterdir())
    raise SourceNotFound(
        f"{folder}: no {stem}.csv or {stem}.csv.zip (found: {found[:10]}); point --path "
        "(data.path) at the Walmart Recruiting folder holding train, features and stores"
    )


def _read_walmart(folder: Path, stem: str, needed: list[str]) -> pd.DataFrame:
    """One Walmart file with canonical snake_case names; ``needed`` are checked."""
    path = walmart_file(folder, stem)
    frame = read_table_file(path).rename(columns=_WALMART_NAMES)
    require_columns(frame, needed, f"walmart {path.name}")
    if DATE in frame.columns:
        frame[DATE] = to_dates(frame[DATE], "Date", "%Y-%m-%d")
    return frame


def _walmart_features(folder: Path) -> pd.DataFrame:
    """Columns out: store, ds, is_holiday, the covariates; NA markdowns = 0, CPI ffilled."""
    cols = _WALMART_NEEDED["features"]
    feats = _read_walmart(folder, "features", cols)[cols]
    no_repeats(feats, ["store", DATE], "walmart features file")
    feats = feats.sort_values(["store", DATE], kind="stable").reset_index(drop=True)
    markdowns = [f"markdown{i}" for i in range(1, 6)]
    feats[markdowns] = feats[markdowns].fillna(0.0)
    # CPI and unemployment are published late: the last weeks repeat the last known value.
    slow = ["cpi", "unemployment"]
    feats[slow] = feats.groupby("store")[slow].ffill()
    return feats


def load_walmart(path: str | Path) -> SalesData:
    """The Kaggle Walmart Recruiting folder: ``train``, ``features`` and ``stores`` files.

    Columns out: ``unique_id, store, dept, ds, y, is_holiday, temperature, fuel_price,
    markdown1..markdown5, cpi, unemployment, store_type, store_size``; ``future`` holds
    every series' covariates for the ``features`` dates after the last ``train`` date.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise SourceNotFound(f"walmart data folder {folder} not found: check data.path (--path)")
    train = _read_walmart(folder, "train", _WALMART_NEEDED["train"])
    feats = _walmart_features(folder)
    stores = _read_walmart(folder, "stores", _WALMART_NEEDED["stores"])
    history = train.merge(
        feats.drop(columns=HOLIDAY), on=["store", DATE], how="left", validate="many_to_one"
    ).merge(stores[["store", *WALMART_STATIC]], on="store", how="left", validate="many_to_one")
    series = history.drop_duplicates(WALMART_KEYS)[[*WALMART_KEYS, *WALMART_STATIC]]
    future = series.merge(feats[feats[DATE] > train[DATE].max()], on="store")
    parts = (list(WALMART_KEYS), list(WALMART_COVARIATES), list(WALMART_STATIC))
    return SalesData(
        history=canonical_frame(history, *parts),
        future=canonical_frame(future, *parts, target=False),
        keys=parts[0],
        covariates=parts[1],
        static=parts[2],
        freq="W-FRI",
        source="walmart",
    )


# --- generic long format: SQL (files: salesflow.long_format) -------------------------


def _table_select(table: str) -> sa.Select:
    """``SELECT * FROM [schema.]table`` with both parts validated and quoted by SQLAlchemy."""
    schema, _, name = table.rpartition(".")
    for part in [schema, name] if schema else [name]:
        if not IDENTIFIER.fullmatch(part):
            raise SourceError(
                f"table {table!r} is not a valid name: use letters, digits and '_' "
                "(optionally schema.table), starting with a letter or '_'"
            )
    return sa.select(sa.literal_column("*")).select_from(sa.table(name, schema=schema or None))


def sql_select(table: str | None, query: str | None) -> sa.Select:
    """``SELECT *`` of ``table`` or of ``query`` (exactly one) as a subquery-able select."""
    if (table is None) == (query is None):
        raise SourceError("the sql source needs exactly one of data.table or data.query")
    if table is not None:
        return _table_select(table)
    rows = sa.text(str(query)).columns().subquery("q")
    return sa.select(sa.literal_column("*")).select_from(rows)


def load_sql(
    url: str,
    table: str | None = None,
    query: str | None = None,
    mapping: LongFormatSection | None = None,
    freq: str = "W-FRI",
    key_values: Sequence[Any] | None = None,
) -> SalesData:
    """Rows of ``table`` or of ``query`` (exactly one), mapped like :func:`load_long`;
    ``key_values``: only the rows whose first key column holds one of them (a partition;
    a query is then read as a subquery, so it cannot end with ``;``)."""
    if (table is None) == (query is None):
        raise SourceError("the sql source needs exactly one of data.table or data.query")
    mapping = mapping or LongFormatSection()
    stmt: sa.Executable
    if key_values is not None:
        column = _key_column(mapping.key_columns[0])
        stmt = sql_select(table, query).where(column.in_(list(key_values)))
    elif table is not None:
        stmt = _table_select(table)
    else:
        stmt = sa.text(str(query))
    raw = _query_sql(url, table, stmt)
    if raw.empty:
        raise SourceError(f"the sql source returned no rows ({table or 'data.query'})")
    side = read_side_files(long_files(None, mapping), mapping)
    return sales_from_long(raw, mapping, freq, "sql", **side)


def sql_key_values(url: str, table: str | None, query: str | None, column: str) -> list[Any]:
    """The distinct values of ``column`` in the sql source, sorted (how it is partitioned)."""
    col = _key_column(column)
    stmt = sa.select(col).select_from(sql_select(table, query).subquery("src")).distinct()
    values = _query_sql(url, table, stmt.order_by(col)).iloc[:, 0]
    return [v.item() if hasattr(v, "item") else v for v in values.dropna()]


def _query_sql(url: str, table: str | None, stmt: sa.Executable) -> pd.DataFrame:
    """The rows of ``stmt`` on ``url`` (``table``, when given, must exist: a clear error)."""
    engine = _sql_engine(url)
    try:
        with engine.connect() as conn:
            if table is not None:
                _require_table(conn, table, url)
            return _read_sql(stmt, conn)
    finally:
        engine.dispose()


def _key_column(name: str) -> sa.ColumnClause:
    if not IDENTIFIER.fullmatch(name):
        raise SourceError(
            f"key column {name!r} cannot partition the sql source: use letters, digits and '_'"
        )
    return sa.column(name)


def _sql_engine(url: str) -> sa.Engine:
    try:
        return sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise SourceError(
            f"the sql source URL {redact(url)!r} is not a valid SQLAlchemy URL: {exc}; "
            "fix data.url or the variable named by data.url_env"
        ) from None


def _require_table(conn: sa.Connection, table: str, url: str) -> None:
    schema, _, name = table.rpartition(".")
    if not sa.inspect(conn).has_table(name, schema=schema or None):
        raise SourceError(
            f"table {table!r} (data.table) does not exist in {redact(url)}: check the name "
            "and schema, or use data.query"
        )


def _read_sql(stmt: sa.Executable, conn: sa.Connection) -> pd.DataFrame:
    """The rows of ``stmt``; a query the database rejects is a SourceError naming it."""
    try:
        return pd.read_sql(stmt, conn)
    except sa.exc.DBAPIError as exc:
        if is_transient(exc) or isinstance(exc, sa.exc.InterfaceError):
            raise
        first = (str(exc.orig).strip().splitlines() or ["error"])[0]
        raise SourceError(f"the database rejected the sql source's query: {first}") from None


# --- dispatch -------------------------------------------------------------------------


def check_source_files(data: DataSection) -> None:
    """Before reading any data: the configured files exist and their headers hold the
    mapped columns (only headers are read). SourceError naming what to fix otherwise;
    for the sql source only its side files (static, future, covariates) are checked."""
    if data.source == "long":
        check_long_files(data.path or "", data.long)
    elif data.source == "sql":
        check_long_files(None, data.long)
    elif data.source == "walmart":
        folder = Path(source_path(data))
        if not folder.is_dir():
            raise SourceNotFound(
                f"walmart data folder {folder} not found: check data.path (--path)"
            )
        for stem, needed in _WALMART_NEEDED.items():
            path = walmart_file(folder, stem)
            require_header(path, needed, f"walmart {path.name}", "utf-8", _WALMART_NAMES)


def sql_url(data: DataSection) -> str:
    """``data.url_env``'s value when set (secrets), else ``data.url``."""
    if data.url_env and os.environ.get(data.url_env):
        return os.environ[data.url_env]
    if data.url:
        return data.url
    raise SourceError(
        f"data.source is 'sql' but the environment variable {data.url_env!r} "
        "(data.url_env) is unset or empty: export it or set data.url"
    )


def source_path(data: DataSection) -> str:
    """``data.path``; SourceError when the source needs one and it is unset."""
    if not data.path:
        raise SourceError(f"data.path is required when data.source is {data.source!r}")
    return data.path


def load_sales(data: DataSection) -> SalesData:
    """Load the configured source, then cut it at ``data.as_of`` (later rows -> future)."""
    if data.source == "synthetic":
        sales = generate_sales(data.synthetic)
    elif data.source == "walmart":
        sales = load_walmart(source_path(data))
    elif data.source == "long":
        sales = load_long(source_path(data), data.long, data.freq)
    elif data.source == "sql":
        sales = load_sql(sql_url(data), data.table, data.query, data.long, data.freq)
    else:  # unreachable through settings validation, kept for callers building sections
        raise SourceError(
            f"unknown data.source {data.source!r}: use synthetic, walmart, long or sql"
        )
    return sales.as_of(data.as_of)
