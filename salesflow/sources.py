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
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from features.calendar import is_holiday_period
from salesflow.canonical import (
    RESERVED,
    WALMART_COVARIATES,
    WALMART_KEYS,
    WALMART_STATIC,
    canonical_frame,
    require_columns,
    to_dates,
)
from salesflow.identifiers import IDENTIFIER
from salesflow.schema import DATE, HOLIDAY, TARGET, SalesData
from salesflow.settings import DataSection, LongFormatSection
from salesflow.synthetic import generate_sales

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".zip")
_PARQUET_SUFFIXES = (".parquet", ".pq")
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


def read_table_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV (plain, ``.csv.gz`` or one CSV inside a ``.zip``) or a Parquet file."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "not found"
        raise FileNotFoundError(f"data file {p} {what}")
    name = p.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return pd.read_parquet(p)
    if name.endswith(_CSV_SUFFIXES):
        return pd.read_csv(p)
    raise ValueError(
        f"{p.name}: unknown file type; use one of {list(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}"
    )


# --- Walmart Recruiting (Kaggle) ------------------------------------------------------


def _walmart_file(folder: Path, stem: str) -> Path:
    for suffix in (".csv", ".csv.zip", ".csv.gz", ".zip"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    found = sorted(p.name for p in folder.iterdir())
    raise FileNotFoundError(f"{folder}: no {stem}.csv or {stem}.csv.zip (found: {found})")


def _read_walmart(folder: Path, stem: str, needed: list[str]) -> pd.DataFrame:
    """One Walmart file with canonical snake_case names; ``needed`` are checked."""
    path = _walmart_file(folder, stem)
    frame = read_table_file(path).rename(columns=_WALMART_NAMES)
    require_columns(frame, needed, f"walmart {path.name}")
    if DATE in frame.columns:
        frame[DATE] = to_dates(frame[DATE], "Date", "%Y-%m-%d")
    return frame


def _walmart_features(folder: Path) -> pd.DataFrame:
    """Columns out: store, ds, is_holiday, the covariates; NA markdowns = 0, CPI ffilled."""
    cols = ["store", DATE, HOLIDAY, *WALMART_COVARIATES]
    feats = _read_walmart(folder, "features", cols)[cols]
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
        raise FileNotFoundError(f"walmart data folder {folder} not found")
    train = _read_walmart(folder, "train", [*WALMART_KEYS, DATE, TARGET, HOLIDAY])
    feats = _walmart_features(folder)
    stores = _read_walmart(folder, "stores", ["store", *WALMART_STATIC])
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


# --- generic long format: file or SQL -------------------------------------------------


def _check_mapping(mapping: LongFormatSection) -> None:
    names = [*mapping.key_columns, *mapping.covariates, *mapping.static]
    clash = sorted({n for n in names if n in RESERVED or names.count(n) > 1})
    if clash:
        raise ValueError(
            f"data.long: keys/covariates/static {clash} repeat a name or use a reserved "
            f"one {list(RESERVED)}; rename them in the source"
        )


def _rename_long(
    raw: pd.DataFrame, mapping: LongFormatSection, covariates: list[str]
) -> pd.DataFrame:
    """Columns out: keys, ds, y, [is_holiday], ``covariates``, static (names as mapped)."""
    holiday = [mapping.holiday] if mapping.holiday else []
    cols = [
        *mapping.key_columns,
        mapping.date,
        mapping.target,
        *holiday,
        *covariates,
        *mapping.static,
    ]
    require_columns(raw, cols, "long-format data")
    frame = raw[list(dict.fromkeys(cols))].rename(
        columns={mapping.date: DATE, mapping.target: TARGET, **dict.fromkeys(holiday, HOLIDAY)}
    )
    frame[DATE] = to_dates(frame[DATE], mapping.date, mapping.date_format)
    return frame


def _covariate_rows(cov_raw: pd.DataFrame, mapping: LongFormatSection) -> pd.DataFrame:
    """Columns out: covariate keys, ds, [is_holiday], covariates; one row per keys x ds."""
    ckeys = mapping.covariate_keys or mapping.key_columns
    outside = [k for k in ckeys if k not in [*mapping.key_columns, *mapping.static]]
    if outside:
        raise ValueError(f"data.long.covariate_keys {outside} are neither keys nor static")
    require_columns(cov_raw, [*ckeys, mapping.date, *mapping.covariates], "covariates file")
    holiday = [mapping.holiday] if mapping.holiday in cov_raw.columns else []
    cov = cov_raw[[*ckeys, mapping.date, *holiday, *mapping.covariates]].rename(
        columns={mapping.date: DATE, **dict.fromkeys(holiday, HOLIDAY)}
    )
    cov[DATE] = to_dates(cov[DATE], mapping.date, mapping.date_format)
    dup = cov.duplicated([*ckeys, DATE])
    if dup.any():
        raise ValueError(
            f"covariates file: {int(dup.sum())} repeated rows for the same {ckeys} and date"
        )
    return cov


def _join_covariates(
    frame: pd.DataFrame, cov: pd.DataFrame, mapping: LongFormatSection, freq: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """History with covariates joined on, and future rows after the last target date."""
    ckeys = mapping.covariate_keys or mapping.key_columns
    history = frame.merge(cov.drop(columns=HOLIDAY, errors="ignore"), on=[*ckeys, DATE], how="left")
    series = frame.drop_duplicates(mapping.key_columns, keep="last")[
        [*mapping.key_columns, *mapping.static]
    ]
    future = series.merge(cov[cov[DATE] > frame[DATE].max()], on=ckeys)
    if HOLIDAY not in future.columns:
        future[HOLIDAY] = is_holiday_period(future[DATE], freq)
    return history, future


def sales_from_long(
    raw: pd.DataFrame,
    mapping: LongFormatSection,
    freq: str,
    source: str = "long",
    covariate_rows: pd.DataFrame | None = None,
) -> SalesData:
    """Map a long-format frame (one row per series x date) to :class:`SalesData`.

    Columns in: ``mapping.key_columns``, ``mapping.date``, ``mapping.target``, optionally
    ``mapping.holiday`` (else computed from the calendar for ``freq``), ``mapping.static``
    and ``mapping.covariates`` (taken from ``covariate_rows`` when given, whose rows after
    the last target date become ``future``). Columns out: the canonical ones.
    """
    _check_mapping(mapping)
    own = [] if covariate_rows is not None else list(mapping.covariates)
    frame = _rename_long(raw, mapping, own)
    if HOLIDAY not in frame.columns:
        frame[HOLIDAY] = is_holiday_period(frame[DATE], freq)
    future = frame.iloc[:0].drop(columns=TARGET)
    if covariate_rows is not None:
        frame, future = _join_covariates(
            frame, _covariate_rows(covariate_rows, mapping), mapping, freq
        )
    parts = (list(mapping.key_columns), list(mapping.covariates), list(mapping.static))
    return SalesData(
        history=canonical_frame(frame, *parts),
        future=canonical_frame(future, *parts, target=False),
        keys=parts[0],
        covariates=parts[1],
        static=parts[2],
        freq=freq,
        source=source,
    )


def _covariates_file(mapping: LongFormatSection) -> pd.DataFrame | None:
    return read_table_file(mapping.covariates_path) if mapping.covariates_path else None


def load_long(path: str | Path, mapping: LongFormatSection, freq: str = "W-FRI") -> SalesData:
    """A long-format file (CSV, .csv.gz, zipped CSV, Parquet) mapped by ``mapping``.

    See :func:`sales_from_long` for the columns in and out.
    """
    return sales_from_long(read_table_file(path), mapping, freq, "long", _covariates_file(mapping))


def _table_select(table: str) -> sa.Select:
    """``SELECT * FROM [schema.]table`` with both parts validated and quoted by SQLAlchemy."""
    schema, _, name = table.rpartition(".")
    for part in [schema, name] if schema else [name]:
        if not IDENTIFIER.fullmatch(part):
            raise ValueError(
                f"table {table!r} is not a valid name: use letters, digits and '_' "
                "(optionally schema.table), starting with a letter or '_'"
            )
    return sa.select(sa.literal_column("*")).select_from(sa.table(name, schema=schema or None))


def load_sql(
    url: str,
    table: str | None = None,
    query: str | None = None,
    mapping: LongFormatSection | None = None,
    freq: str = "W-FRI",
) -> SalesData:
    """Rows of ``table`` or of ``query`` (exactly one), mapped like :func:`load_long`."""
    if (table is None) == (query is None):
        raise ValueError("load_sql needs exactly one of table or query")
    mapping = mapping or LongFormatSection()
    stmt = _table_select(table) if table is not None else sa.text(str(query))
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            raw = pd.read_sql(stmt, conn)
    finally:
        engine.dispose()
    return sales_from_long(raw, mapping, freq, "sql", _covariates_file(mapping))


# --- dispatch -------------------------------------------------------------------------


def _sql_url(data: DataSection) -> str:
    """``data.url_env``'s value when set (secrets), else ``data.url``."""
    if data.url_env and os.environ.get(data.url_env):
        return os.environ[data.url_env]
    if data.url:
        return data.url
    raise ValueError(
        f"data.source is 'sql' but the environment variable {data.url_env!r} "
        "(data.url_env) is unset or empty: export it or set data.url"
    )


def _path(data: DataSection) -> str:
    if not data.path:
        raise ValueError(f"data.path is required when data.source is {data.source!r}")
    return data.path


def load_sales(data: DataSection) -> SalesData:
    """Load the configured source, then cut it at ``data.as_of`` (later rows -> future)."""
    if data.source == "synthetic":
        sales = generate_sales(data.synthetic)
    elif data.source == "walmart":
        sales = load_walmart(_path(data))
    elif data.source == "long":
        sales = load_long(_path(data), data.long, data.freq)
    elif data.source == "sql":
        sales = load_sql(_sql_url(data), data.table, data.query, data.long, data.freq)
    else:  # unreachable through settings validation, kept for callers building sections
        raise ValueError(f"unknown data.source {data.source!r}")
    return sales.as_of(data.as_of)
