"""Daily long-format data in a folder (Rossmann layout): static and future files, holiday
codes, categorical covariates, and the known-ahead rule at forecast time."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from salesflow.commands.preflight import file_periods
from salesflow.config.settings import DataSection, LongFormatSection, SettingsError, load_settings
from salesflow.data.canonical import SourceError, SourceNotFound, holiday_flag
from salesflow.data.schema import DATE, HOLIDAY, ID, TARGET
from salesflow.data.sources import check_source_files, load_sales
from salesflow.errors import one_line
from salesflow.modelling.scoring import KnownAheadMissing, fill_future_covariates

STATIC = ["StoreType", "Assortment", "CompetitionDistance", "PromoInterval"]
MAPPING = dict(
    keys=["Store"],
    date="Date",
    target="Sales",
    history_file="train.csv.zip",
    static_path="store.csv",
    future_path="future.csv",
    holiday="StateHoliday",
    holiday_none=["0"],
    covariates=["Open", "Promo", "SchoolHoliday"],
    categorical=["StateHoliday"],
    known_ahead=["Open", "Promo", "SchoolHoliday", "StateHoliday"],
    open="Open",
    static=STATIC,
)
HISTORY_DAYS = pd.date_range("2015-06-06", "2015-06-19", freq="D")  # 14 days
FUTURE_DAYS = pd.date_range("2015-06-20", periods=3, freq="D")
CODES = {"2015-06-07": "a", "2015-06-14": "b", "2015-06-21": "c"}


def _day_rows(days: pd.DatetimeIndex, sales: bool) -> pd.DataFrame:
    """2 stores x ``days``, newest first as in the Kaggle file; closed on Sundays."""
    rows = []
    for d in sorted(days, reverse=True):
        for store in (1, 2):
            sunday = d.dayofweek == 6
            row = {"Store": store, "DayOfWeek": d.dayofweek + 1, "Date": f"{d:%Y-%m-%d}"}
            if sales:
                row |= {"Sales": 0 if sunday else 100 * store + d.day, "Customers": 9}
            row |= {
                "Open": 0 if sunday else 1,
                "Promo": int(d.day % 2 == 0),
                "StateHoliday": CODES.get(f"{d:%Y-%m-%d}", "0"),
                "SchoolHoliday": 0,
            }
            rows.append(row)
    return pd.DataFrame(rows)


def _folder(tmp_path: Path, future: pd.DataFrame | None = None) -> Path:
    """train.csv.zip (every field quoted), store.csv and future.csv (unquoted) in a folder."""
    _day_rows(HISTORY_DAYS, sales=True).to_csv(
        tmp_path / "train.csv.zip",
        index=False,
        quoting=csv.QUOTE_NONNUMERIC,
        compression={"method": "zip", "archive_name": "train.csv"},
    )
    stores = pd.DataFrame(
        {
            "Store": [1, 2],
            "StoreType": ["c", "a"],
            "Assortment": ["a", "b"],
            "CompetitionDistance": [1270.0, None],
            "PromoInterval": ["", "Jan,Apr,Jul,Oct"],
            "Promo2": [0, 1],
        }
    )
    stores.to_csv(tmp_path / "store.csv", index=False, quoting=csv.QUOTE_NONNUMERIC)
    if future is None:
        future = _day_rows(FUTURE_DAYS, sales=False)
    future.to_csv(tmp_path / "future.csv", index=False)
    return tmp_path


def _section(folder: Path, **changes) -> DataSection:
    return DataSection(source="long", path=str(folder), freq="D", long={**MAPPING, **changes})


def test_folder_layout_joins_statics_and_reads_the_future(tmp_path):
    """history_file, static_path and future_path inside the folder give one SalesData."""
    data = load_sales(_section(_folder(tmp_path)))
    assert len(data.history) == 2 * 14 and data.n_series == 2
    assert len(data.future) == 2 * 3
    assert sorted(data.future[DATE].unique()) == list(FUTURE_DAYS)
    assert list(data.future.columns) == [c for c in data.history.columns if c != TARGET]
    statics = data.static_frame().set_index("Store")
    assert statics.loc[1, "StoreType"] == "c" and statics.loc[2, "Assortment"] == "b"
    assert pd.isna(statics.loc[2, "CompetitionDistance"])
    assert statics.loc[2, "PromoInterval"] == "Jan,Apr,Jul,Oct"
    assert data.future.groupby("Store")["StoreType"].first().to_dict() == {1: "c", 2: "a"}
    assert (data.categorical, data.open) == (["StateHoliday"], "Open")
    assert data.known_ahead == ["Open", "Promo", "SchoolHoliday", "StateHoliday"]


def test_canonical_column_order_puts_categorical_between_covariates_and_static(tmp_path):
    """Columns: unique_id, keys, ds, y, is_holiday, covariates, categorical, static."""
    data = load_sales(_section(_folder(tmp_path)))
    expected = [ID, "Store", DATE, TARGET, HOLIDAY, "Open", "Promo", "SchoolHoliday"]
    assert list(data.history.columns) == [*expected, "StateHoliday", *STATIC]
    assert data.history["Open"].dtype == "float64"


def test_holiday_codes_are_text_categories_and_the_flag(tmp_path):
    """StateHoliday stays a text code ("0", "a", ...); is_holiday is True for a/b/c only."""
    data = load_sales(_section(_folder(tmp_path)))
    for frame in (data.history, data.future):
        codes = frame["StateHoliday"]
        assert codes.dtype == object and all(isinstance(v, str) for v in codes)
        assert frame[HOLIDAY].tolist() == codes.ne("0").tolist()
    assert set(data.history["StateHoliday"]) == {"0", "a", "b"}
    assert set(data.future["StateHoliday"]) == {"0", "c"}  # future.csv: unquoted 0 and c


@pytest.mark.parametrize(
    "values",
    [
        pd.Series([0, "0", " a", "b", "c", None], dtype=object),
        pd.Series(["0", "0", "a", "b", "c", ""]),
        pd.Series([0, 0.0, 3, 4, 5, None]),
    ],
    ids=["mixed-int-and-text", "text", "numbers"],
)
def test_holiday_flag_from_codes(values):
    """0 and "0" mean no holiday whether read as number or text; missing is no holiday."""
    assert holiday_flag(values, "StateHoliday", ["0"]).tolist() == [False] * 2 + [True] * 3 + [
        False
    ]


def test_history_with_integer_codes_reads_like_text(tmp_path):
    """A Parquet history whose StateHoliday is an integer column gives the same codes."""
    folder = _folder(tmp_path)
    frame = _day_rows(HISTORY_DAYS, sales=True).assign(StateHoliday=lambda f: f.Open * 0)
    frame.to_parquet(folder / "train.parquet", index=False)
    data = load_sales(_section(folder, history_file="train.parquet"))
    assert set(data.history["StateHoliday"]) == {"0"} and not data.history[HOLIDAY].any()


def test_as_of_moves_categorical_values_into_the_future(tmp_path):
    """Cutting the data keeps the categorical text values of the later days in future."""
    data = load_sales(_section(_folder(tmp_path))).as_of("2015-06-13")
    later = data.future[data.future[DATE] == pd.Timestamp("2015-06-14")]
    assert later["StateHoliday"].tolist() == ["b", "b"]
    assert len(data.future) == 2 * (6 + 3)


def test_known_ahead_missing_names_columns_series_and_dates(tmp_path):
    """A target date without Open/Promo/... stops the forecast with what is missing."""
    data = load_sales(_section(_folder(tmp_path)))
    origin = FUTURE_DAYS[0]
    with pytest.raises(KnownAheadMissing) as err:
        fill_future_covariates(data, origin, horizon=5)
    msg = one_line(err.value)
    assert "known-ahead covariates 'Open', 'Promo', 'SchoolHoliday', 'StateHoliday'" in msg
    assert "missing for 2 series on 2 target dates (2015-06-23, 2015-06-24)" in msg
    assert "data.long.future_path" in msg
    _, n_filled, cols = fill_future_covariates(data, origin, horizon=3)
    assert (n_filled, cols) == (0, [])


def test_known_ahead_missing_for_one_series_counts_it(tmp_path):
    """A future file without store 2 names one series and its three dates."""
    future = _day_rows(FUTURE_DAYS, sales=False).query("Store == 1")
    data = load_sales(_section(_folder(tmp_path, future)))
    with pytest.raises(KnownAheadMissing, match=r"for 1 series on 3 target dates \(2015-06-20"):
        fill_future_covariates(data, FUTURE_DAYS[0], horizon=3)


def test_columns_not_known_ahead_carry_their_last_value(tmp_path):
    """Without known_ahead, missing future values (categorical too) are carried forward."""
    mapping = dict(known_ahead=[], open=None, future_path=None)
    data = load_sales(_section(_folder(tmp_path), **mapping))
    assert data.future.empty
    filled, n_filled, cols = fill_future_covariates(data, FUTURE_DAYS[0], horizon=3)
    assert n_filled == 2 * 3 and cols == ["Open", "Promo", "SchoolHoliday", "StateHoliday"]
    last = data.history[data.history[DATE] == HISTORY_DAYS[-1]].set_index("Store")
    fut = filled.future.set_index("Store")
    assert (fut["Promo"].groupby(level=0).first() == last["Promo"]).all()
    assert set(fut["StateHoliday"]) == {"0"} and fut["StoreType"].notna().all()


def test_future_file_may_leave_out_covariates_that_are_not_known_ahead(tmp_path):
    """Only keys, date, holiday and the known-ahead columns are required in future.csv."""
    future = _day_rows(FUTURE_DAYS, sales=False).drop(columns="SchoolHoliday")
    folder = _folder(tmp_path, future)
    section = _section(folder, known_ahead=["Open", "Promo", "StateHoliday"])
    check_source_files(section)
    data = load_sales(section)
    assert data.future["SchoolHoliday"].isna().all()
    with pytest.raises(SourceError, match=r"future\.csv.*missing column\(s\) \['SchoolHoliday'\]"):
        check_source_files(_section(folder))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(open="Customers"), r"data\.long\.open 'Customers' must be one of data\.long\.cov"),
        (dict(known_ahead=["Promo"]), r"data\.long\.open 'Open' must be in data\.long\.k"),
        (dict(known_ahead=["Open", "Weather"]), r"known_ahead \['Weather'\] are not in data\.l"),
        (dict(categorical=["StateHoliday", "Promo"]), r"\['Promo'\] are in both covariates"),
        (dict(holiday=None), r"holiday_none needs data\.long\.holiday"),
    ],
    ids=["open-not-a-covariate", "open-not-known-ahead", "unknown-known-ahead", "both", "codes"],
)
def test_mapping_errors_are_one_clear_line(changes, message):
    """Each wrong role in data.long is a settings error on one line naming the key."""
    with pytest.raises(ValidationError, match=message):
        LongFormatSection(**{**MAPPING, **changes})
    data = {"source": "long", "path": "x", "freq": "D", "long": {**MAPPING, **changes}}
    with pytest.raises(SettingsError) as err:
        load_settings("dev", data=data)
    assert "\n" not in one_line(err.value) and "data.long" in one_line(err.value)


def test_missing_static_file_names_the_setting(tmp_path):
    """A static_path that does not exist is reported before any data is read."""
    folder = _folder(tmp_path)
    (folder / "store.csv").unlink()
    with pytest.raises(SourceNotFound, match=r"data\.long\.static_path: file .*store\.csv not"):
        check_source_files(_section(folder))


def test_folder_needs_history_file_and_history_file_needs_a_folder(tmp_path):
    """data.path a folder without history_file, or a file with one, is one clear error."""
    folder = _folder(tmp_path)
    with pytest.raises(SourceError, match="is a folder, not a file"):
        check_source_files(_section(folder, history_file=None))
    with pytest.raises(SourceNotFound, match="is a file, not a folder"):
        check_source_files(_section(folder / "store.csv"))
    with pytest.raises(SourceNotFound, match=r"history_file 'nope\.csv' not found in"):
        check_source_files(_section(folder, history_file="nope.csv"))


def test_static_keys_with_another_type_are_reported(tmp_path):
    """Store as text in store.csv and as numbers in the history cannot silently mismatch."""
    folder = _folder(tmp_path)
    stores = pd.read_csv(folder / "store.csv")
    stores.assign(Store="S" + stores["Store"].astype(str)).to_csv(folder / "store.csv")
    with pytest.raises(SourceError, match=r"cannot join the static file on \['Store'\]"):
        load_sales(_section(folder))


def test_file_periods_reads_the_history_file_in_the_folder(tmp_path):
    """The preflight span check finds the history inside the folder: 14 daily periods."""
    assert file_periods(_section(_folder(tmp_path))) == 14


def test_sql_history_reads_the_same_side_files(tmp_path):
    """A SQL table as history with static_path/future_path files gives the same data."""
    import sqlalchemy as sa

    from salesflow.data.sources import load_sql

    folder = _folder(tmp_path)
    url = f"sqlite:///{tmp_path / 'sales.db'}"
    engine = sa.create_engine(url)
    _day_rows(HISTORY_DAYS, sales=True).to_sql("sales", engine, index=False)
    engine.dispose()
    files = dict(history_file=None, static_path=str(folder / "store.csv"))
    mapping = LongFormatSection(**{**MAPPING, **files, "future_path": str(folder / "future.csv")})
    from_sql = load_sql(url, table="sales", mapping=mapping, freq="D")
    from_files = load_sales(_section(folder))
    pd.testing.assert_frame_equal(from_sql.history, from_files.history)
    pd.testing.assert_frame_equal(from_sql.future, from_files.future)
