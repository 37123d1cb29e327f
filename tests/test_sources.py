"""Data sources: files, the Walmart folder, long format, SQL and the load_sales dispatch."""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from salesflow.config.settings import DataSection, LongFormatSection, SyntheticSection
from salesflow.data.canonical import WALMART_COVARIATES
from salesflow.data.schema import DATE, HOLIDAY, ID, TARGET
from salesflow.data.sources import load_long, load_sales, load_sql, load_walmart, read_table_file
from salesflow.data.synthetic import generate_sales

WALMART_MINI = Path(__file__).parent / "fixtures" / "walmart_mini"
PG_URL = os.environ.get(
    "SALESFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MAPPING = LongFormatSection(
    keys=["shop", "sku"],
    date="week_ending",
    target="units",
    covariates=["price"],
    static=["region"],
    date_format="%d/%m/%Y",
)
WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    "data.csv": lambda f, p: f.to_csv(p, index=False),
    "data.csv.gz": lambda f, p: f.to_csv(p, index=False),
    "data.zip": lambda f, p: f.to_csv(
        p, index=False, compression={"method": "zip", "archive_name": "data.csv"}
    ),
    "data.parquet": lambda f, p: f.to_parquet(p, index=False),
}


def _long_raw(weeks: int = 16) -> pd.DataFrame:
    """2 shops x 2 SKUs of weekly (Friday) rows around Thanksgiving/Christmas 2011, shuffled."""
    dates = pd.date_range("2011-10-07", periods=weeks, freq="W-FRI")
    rows = [
        {
            "shop": shop,
            "sku": sku,
            "week_ending": d.strftime("%d/%m/%Y"),
            "units": float(10 * i + sku),
            "price": 1.5 + 0.01 * i,
            "region": region,
        }
        for shop, region in (("S1", "north"), ("S2", "south"))
        for sku in (7, 42)
        for i, d in enumerate(dates)
    ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)


def _assert_sorted(frame: pd.DataFrame) -> None:
    expected = frame.sort_values([ID, DATE]).reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, expected)


# --- read_table_file ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(WRITERS))
def test_read_table_file_reads_every_format(tmp_path: Path, name: str) -> None:
    """CSV, .csv.gz, zipped CSV and Parquet read back to the same frame."""
    frame = _long_raw().reset_index(drop=True)
    WRITERS[name](frame, tmp_path / name)
    pd.testing.assert_frame_equal(read_table_file(tmp_path / name), frame)


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("absent.csv", FileNotFoundError, "not found"),
        ("folder", FileNotFoundError, "folder"),
        ("data.xlsx", ValueError, "unknown file type"),
    ],
)
def test_read_table_file_errors(tmp_path: Path, name: str, error: type, message: str) -> None:
    """A missing file, a folder or an unknown suffix fails with a clear error."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(error, match=message):
        read_table_file(tmp_path / name)


# --- Walmart --------------------------------------------------------------------------


def test_walmart_fixture_has_the_real_format() -> None:
    """The fixture keeps the quirks of the real files: CR endings, NA, TRUE/FALSE, a zip."""
    assert b"\r" in (WALMART_MINI / "stores.csv").read_bytes()
    assert b"\n" not in (WALMART_MINI / "stores.csv").read_bytes()
    features = (WALMART_MINI / "features.csv").read_text()
    assert ",NA," in features and "TRUE" in features and "FALSE" in features
    assert zipfile.ZipFile(WALMART_MINI / "train.csv.zip").namelist() == ["train.csv"]
    assert sum(p.stat().st_size for p in WALMART_MINI.iterdir()) < 30_000


@pytest.fixture(params=["train.csv.zip", "train.csv"])
def walmart_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The mini Walmart folder, with train zipped (as on Kaggle) or plain."""
    folder = tmp_path / "walmart"
    shutil.copytree(WALMART_MINI, folder)
    if request.param == "train.csv":
        with zipfile.ZipFile(folder / "train.csv.zip") as zf:
            zf.extractall(folder)
        (folder / "train.csv.zip").unlink()
    return folder


def test_load_walmart_history(walmart_dir: Path) -> None:
    """History holds every train row in canonical columns and dtypes."""
    sales = load_walmart(walmart_dir)
    hist = sales.history
    assert list(hist.columns) == [
        *[ID, "store", "dept", DATE, TARGET, HOLIDAY],
        *WALMART_COVARIATES,
        *["store_type", "store_size"],
    ]
    assert len(hist) == 40 and sales.n_series == 5
    assert sorted(hist[ID].unique()) == ["1/1", "1/2", "2/1", "2/3", "3/1"]
    assert hist[DATE].dtype == "datetime64[ns]" and hist[HOLIDAY].dtype == bool
    assert (hist[[TARGET, *WALMART_COVARIATES]].dtypes == "float64").all()
    assert hist["store"].dtype == "int64" and hist["store_size"].dtype == "int64"
    assert hist.notna().all().all()
    _assert_sorted(hist)
    assert sales.source == "walmart" and sales.freq == "W-FRI"


def test_load_walmart_values(walmart_dir: Path) -> None:
    """Holidays, returns, markdowns (NA -> 0) and store attributes come through."""
    hist = load_walmart(walmart_dir).history.set_index([ID, DATE])
    holidays = sorted(hist.index[hist[HOLIDAY]].get_level_values(DATE).unique())
    assert holidays == [pd.Timestamp("2010-11-26"), pd.Timestamp("2010-12-31")]
    assert hist.loc[("2/3", pd.Timestamp("2010-12-17")), TARGET] == -12.5
    assert hist.loc[("1/1", pd.Timestamp("2010-11-19")), TARGET] == 11250.25
    assert hist.loc[("1/1", pd.Timestamp("2010-12-03")), "markdown1"] == 0.0
    assert hist.loc[("1/1", pd.Timestamp("2010-12-10")), "markdown1"] == 1150.0
    assert hist.loc[("1/1", pd.Timestamp("2010-12-10")), "markdown4"] == 0.0
    assert hist.loc[("3/1", pd.Timestamp("2010-12-10")), "store_type"] == "C"
    assert hist.loc[("2/1", pd.Timestamp("2010-12-10")), "store_size"] == 34875


def test_load_walmart_future(walmart_dir: Path) -> None:
    """Future has every series' covariates after the last train date, CPI forward-filled."""
    sales = load_walmart(walmart_dir)
    fut = sales.future
    assert TARGET not in fut.columns and len(fut) == 5 * 6
    expected = list(pd.date_range("2011-01-14", "2011-02-18", freq="W-FRI"))
    assert all(list(d) == expected for _, d in fut.groupby(ID)[DATE])
    assert fut.notna().all().all()
    last_cpi = fut[(fut[ID] == "1/1") & (fut[DATE] >= "2011-02-04")]["cpi"]
    assert last_cpi.tolist() == pytest.approx([201 + 0.1234567 * 12] * 3)
    assert fut.loc[fut[HOLIDAY], DATE].unique().tolist() == [pd.Timestamp("2011-02-11")]
    _assert_sorted(fut)


@pytest.mark.parametrize(("remove", "message"), [(None, "not found"), ("features.csv", "features")])
def test_load_walmart_missing_files(tmp_path: Path, remove: str | None, message: str) -> None:
    """A missing folder or features file fails with FileNotFoundError naming it."""
    folder = tmp_path / "walmart"
    if remove:
        shutil.copytree(WALMART_MINI, folder)
        (folder / remove).unlink()
    with pytest.raises(FileNotFoundError, match=message):
        load_walmart(folder)


# --- long format ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(WRITERS))
def test_load_long_with_custom_mapping(tmp_path: Path, name: str) -> None:
    """A long file with its own column names and date format maps to the schema."""
    WRITERS[name](_long_raw(), tmp_path / name)
    sales = load_long(tmp_path / name, MAPPING, "W-FRI")
    hist = sales.history
    assert list(hist.columns) == [ID, "shop", "sku", DATE, TARGET, HOLIDAY, "price", "region"]
    assert sorted(hist[ID].unique()) == ["S1/42", "S1/7", "S2/42", "S2/7"]
    assert len(hist) == 64 and sales.future.empty
    assert hist[DATE].min() == pd.Timestamp("2011-10-07")
    assert hist[HOLIDAY].dtype == bool and hist["price"].dtype == "float64"
    holidays = sorted(hist.loc[hist[HOLIDAY], DATE].unique())
    assert holidays == [pd.Timestamp("2011-11-25"), pd.Timestamp("2011-12-30")]
    _assert_sorted(hist)
    assert (sales.keys, sales.covariates, sales.static) == (["shop", "sku"], ["price"], ["region"])


def test_load_long_parquet_with_real_dates_and_holiday_column(tmp_path: Path) -> None:
    """Datetime columns skip the date format; a 0/1 holiday column becomes bool."""
    raw = _long_raw()
    raw["week_ending"] = pd.to_datetime(raw["week_ending"], format="%d/%m/%Y")
    raw["promo_week"] = (raw["week_ending"] == "2011-10-14").astype(int)
    raw.to_parquet(tmp_path / "data.parquet")
    mapping = MAPPING.model_copy(update={"holiday": "promo_week"})
    hist = load_long(tmp_path / "data.parquet", mapping, "W-FRI").history
    assert hist.loc[hist[HOLIDAY], DATE].unique().tolist() == [pd.Timestamp("2011-10-14")]


@pytest.mark.parametrize(
    ("update", "missing"),
    [({"target": "revenue"}, "revenue"), ({"static": ["region", "city"]}, "city")],
)
def test_load_long_missing_columns(tmp_path: Path, update: dict, missing: str) -> None:
    """Mapped columns absent from the file raise ValueError naming them and those present."""
    _long_raw().to_csv(tmp_path / "data.csv", index=False)
    with pytest.raises(ValueError, match=rf"\['{missing}'\].*present:.*'units'"):
        load_long(tmp_path / "data.csv", MAPPING.model_copy(update=update), "W-FRI")


def test_load_long_bad_date_format(tmp_path: Path) -> None:
    """Dates that do not match the format raise ValueError naming the column."""
    _long_raw().to_csv(tmp_path / "data.csv", index=False)
    mapping = MAPPING.model_copy(update={"date_format": "%Y-%m-%d"})
    with pytest.raises(ValueError, match="week_ending"):
        load_long(tmp_path / "data.csv", mapping, "W-FRI")


def _with_covariates_file(tmp_path: Path, weeks_ahead: int = 4) -> LongFormatSection:
    """Write data.csv without prices and prices.csv per shop running ``weeks_ahead`` further."""
    _long_raw().drop(columns="price").to_csv(tmp_path / "data.csv", index=False)
    dates = pd.date_range("2011-10-07", periods=16 + weeks_ahead, freq="W-FRI")
    prices = pd.DataFrame(
        [
            {"shop": s, "week_ending": d.strftime("%d/%m/%Y"), "price": p + 0.01 * i}
            for s, p in (("S1", 1.0), ("S2", 2.0))
            for i, d in enumerate(dates)
        ]
    )
    prices.to_csv(tmp_path / "prices.csv", index=False)
    return MAPPING.model_copy(
        update={"covariates_path": str(tmp_path / "prices.csv"), "covariate_keys": ["shop"]}
    )


def test_load_long_covariates_file_gives_future(tmp_path: Path) -> None:
    """Covariate rows join onto the series; those after the last target date form the future."""
    mapping = _with_covariates_file(tmp_path)
    sales = load_long(tmp_path / "data.csv", mapping, "W-FRI")
    hist, fut = sales.history, sales.future
    assert hist["price"].notna().all()
    assert hist.loc[(hist["shop"] == "S2") & (hist[DATE] == "2011-10-14"), "price"].eq(2.01).all()
    assert len(fut) == 4 * 4 and TARGET not in fut.columns
    assert fut[DATE].min() == sales.last_date + pd.Timedelta(weeks=1)
    assert fut[HOLIDAY].dtype == bool and set(fut["region"]) == {"north", "south"}
    _assert_sorted(fut)


def test_load_long_duplicate_covariate_rows(tmp_path: Path) -> None:
    """Repeated covariate rows for the same keys and date are refused."""
    mapping = _with_covariates_file(tmp_path)
    prices = pd.read_csv(tmp_path / "prices.csv")
    pd.concat([prices, prices.head(1)]).to_csv(tmp_path / "prices.csv", index=False)
    with pytest.raises(ValueError, match="repeated"):
        load_long(tmp_path / "data.csv", mapping, "W-FRI")


# --- SQL ------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A temp SQLite file holding the long-format rows in table ``sales``."""
    url = f"sqlite:///{tmp_path / 'sales.db'}"
    engine = sa.create_engine(url)
    _long_raw().to_sql("sales", engine, index=False)
    engine.dispose()
    return url


def test_load_sql_table_matches_file(sqlite_url: str, tmp_path: Path) -> None:
    """Reading the table over SQL gives the same history as reading the file."""
    _long_raw().to_csv(tmp_path / "data.csv", index=False)
    from_file = load_long(tmp_path / "data.csv", MAPPING, "W-FRI")
    from_sql = load_sql(sqlite_url, table="sales", mapping=MAPPING, freq="W-FRI")
    pd.testing.assert_frame_equal(from_sql.history, from_file.history)
    assert from_sql.source == "sql"


def test_load_sql_query(sqlite_url: str) -> None:
    """A query selects rows; only its series come back."""
    query = "SELECT * FROM sales WHERE shop = 'S1'"
    sales = load_sql(sqlite_url, query=query, mapping=MAPPING)
    assert sorted(sales.history[ID].unique()) == ["S1/42", "S1/7"]


@pytest.mark.parametrize(
    ("table", "query"),
    [
        ("sales; DROP TABLE sales", None),
        ("1sales", None),
        ("a.b.c", None),
        ("sales", "SELECT 1"),
        (None, None),
    ],
)
def test_load_sql_rejects_bad_arguments(sqlite_url: str, table: str | None, query: str | None):
    """Invalid table names, or not exactly one of table/query, raise ValueError."""
    with pytest.raises(ValueError):
        load_sql(sqlite_url, table=table, query=query, mapping=MAPPING)
    assert load_sql(sqlite_url, table="sales", mapping=MAPPING).n_series == 4  # still there


@pytest.fixture
def pg_engine() -> Iterator[sa.Engine]:
    """A PostgreSQL engine; skips when unreachable, unless CI=true (then it fails)."""
    engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = f"PostgreSQL unreachable at {PG_URL.split('@')[-1]}: {exc.orig}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.mark.postgres
def test_load_sql_postgres(pg_engine: sa.Engine) -> None:
    """A PostgreSQL table with timestamp and boolean columns loads like the file."""
    table = f"salesflow_test_{uuid.uuid4().hex[:12]}"
    raw = _long_raw()
    raw["week_ending"] = pd.to_datetime(raw["week_ending"], format="%d/%m/%Y")
    raw["holiday"] = raw["week_ending"] == "2011-11-25"
    raw.to_sql(table, pg_engine, index=False)
    try:
        mapping = MAPPING.model_copy(update={"holiday": "holiday"})
        sales = load_sql(PG_URL, table=table, mapping=mapping, freq="W-FRI")
    finally:
        with pg_engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
    hist = sales.history
    assert len(hist) == 64 and hist[DATE].dtype == "datetime64[ns]"
    assert hist.loc[hist[HOLIDAY], DATE].unique().tolist() == [pd.Timestamp("2011-11-25")]


# --- load_sales -----------------------------------------------------------------------

SMALL = SyntheticSection(n_stores=2, n_depts=3, periods=40, seed=5)


def test_load_sales_synthetic() -> None:
    """The synthetic source is the seeded generator."""
    sales = load_sales(DataSection(source="synthetic", synthetic=SMALL))
    pd.testing.assert_frame_equal(sales.history, generate_sales(SMALL).history)


def test_load_sales_as_of_moves_later_rows_to_future() -> None:
    """as_of cuts history; the cut rows' covariates lead the future."""
    full = generate_sales(SMALL)
    cut = pd.Timestamp("2010-06-04")
    sales = load_sales(DataSection(source="synthetic", synthetic=SMALL, as_of=cut.date()))
    assert sales.last_date == cut
    assert sales.future[DATE].min() == cut + pd.Timedelta(weeks=1)
    assert len(sales.history) + len(sales.future) == len(full.history) + len(full.future)


def test_load_sales_walmart_as_of() -> None:
    """The walmart source reads the folder and applies as_of."""
    data = DataSection(source="walmart", path=str(WALMART_MINI), as_of="2010-12-24")
    sales = load_sales(data)
    assert sales.last_date == pd.Timestamp("2010-12-24")
    assert sales.future[DATE].min() == pd.Timestamp("2010-12-31")
    assert sales.future[DATE].max() == pd.Timestamp("2011-02-18")


def test_load_sales_long(tmp_path: Path) -> None:
    """The long source uses data.long as mapping and data.freq for the holidays."""
    _long_raw().to_parquet(tmp_path / "data.parquet")
    data = DataSection(source="long", path=str(tmp_path / "data.parquet"), long=MAPPING)
    assert load_sales(data).n_series == 4


def test_load_sales_sql_from_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sql source reads its URL from the env var named by data.url_env."""
    data = DataSection(source="sql", url_env="SALESFLOW_TEST_SQL_URL", table="sales", long=MAPPING)
    monkeypatch.setenv("SALESFLOW_TEST_SQL_URL", sqlite_url)
    assert load_sales(data).n_series == 4
    monkeypatch.delenv("SALESFLOW_TEST_SQL_URL")
    with pytest.raises(ValueError, match="SALESFLOW_TEST_SQL_URL"):
        load_sales(data)
