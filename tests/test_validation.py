"""Data tests: the validation gate passes clean sales data and rejects each kind of bad data."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from salesflow.config.settings import ValidationSection
from salesflow.data.schema import SalesData, make_unique_id
from salesflow.data.validation import (
    DataValidationError,
    ValidationReport,
    check_sales,
    drop_short_series,
    validate_sales,
)

CFG = ValidationSection(max_short_series_share=0.0, max_gap_share=0.0)
START = pd.Timestamp("2011-01-07")  # a Friday
PERIODS = 20


def _make_clean(freq: str = "W-FRI", periods: int = PERIODS) -> SalesData:
    """2 stores x 2 depts of regular history, with NaN markdowns, and 4 future periods."""
    rng = np.random.default_rng(0)
    dates = pd.date_range(START, periods=periods + 4, freq=freq)
    grid = pd.MultiIndex.from_product([[1, 2], [1, 7], dates], names=["store", "dept", "ds"])
    frame = grid.to_frame(index=False)
    frame.insert(0, "unique_id", make_unique_id(frame, ["store", "dept"]))
    n = len(frame)
    frame["y"] = rng.gamma(2.0, 5_000.0, n)
    frame["is_holiday"] = frame["ds"].dt.month.eq(12)
    frame["temperature"] = rng.normal(60.0, 15.0, n)
    frame["fuel_price"] = rng.uniform(2.5, 4.5, n)
    frame["markdown1"] = np.where(rng.random(n) < 0.5, np.nan, rng.uniform(0, 5_000, n))
    frame["store_type"] = np.where(frame["store"] == 1, "A", "B")
    cut = dates[periods - 1]
    return SalesData(
        history=frame[frame["ds"] <= cut].reset_index(drop=True),
        future=frame[frame["ds"] > cut].drop(columns=["y"]).reset_index(drop=True),
        keys=["store", "dept"],
        covariates=["temperature", "fuel_price", "markdown1"],
        static=["store_type"],
        freq=freq,
        source="test",
    )


def _with_history(data: SalesData, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> SalesData:
    return replace(data, history=fn(data.history.copy()))


def _set(row: int, column: str, value: object) -> Callable[[SalesData], SalesData]:
    def mutate(data: SalesData) -> SalesData:
        h = data.history.copy()
        if value is None and h[column].dtype.kind in "iub":
            h[column] = h[column].astype(object)
        h.loc[row, column] = value
        return replace(data, history=h)

    return mutate


def _drop_column(column: str) -> Callable[[SalesData], SalesData]:
    return lambda d: _with_history(d, lambda h: h.drop(columns=[column]))


def _as_strings(column: str) -> Callable[[SalesData], SalesData]:
    return lambda d: _with_history(d, lambda h: h.assign(**{column: h[column].astype(str)}))


def _duplicate_row(data: SalesData) -> SalesData:
    h = data.history
    return replace(data, history=pd.concat([h, h.iloc[[3]]], ignore_index=True))


def _gap(data: SalesData) -> SalesData:
    """Remove the 6th week of series 1/7."""
    h = data.history
    gone = (h["unique_id"] == "1/7") & (h["ds"] == START + pd.Timedelta(weeks=5))
    return replace(data, history=h[~gone].reset_index(drop=True))


def _short_series(data: SalesData) -> SalesData:
    h = data.history
    late = (h["unique_id"] == "2/1") & (h["ds"] > START + pd.Timedelta(weeks=4))
    return replace(data, history=h[~late].reset_index(drop=True))


def _future_overlap(data: SalesData) -> SalesData:
    f = data.future.copy()
    f.loc[f["unique_id"] == "1/1", "ds"] -= pd.Timedelta(weeks=4)
    return replace(data, future=f)


def _future_duplicate(data: SalesData) -> SalesData:
    f = data.future
    return replace(data, future=pd.concat([f, f.iloc[[0]]], ignore_index=True))


def _saturdays(data: SalesData) -> SalesData:
    shift = pd.Timedelta(days=1)
    return replace(
        data,
        history=data.history.assign(ds=data.history["ds"] + shift),
        future=data.future.assign(ds=data.future["ds"] + shift),
    )


LAST = START + pd.Timedelta(weeks=PERIODS - 1)
AS_OF = (LAST - pd.Timedelta(weeks=1)).date()

# (case id, mutation, expected "<check>: <column>: <count>" prefix of the message line)
BAD_CASES = [
    ("missing column", _drop_column("temperature"), "column present: temperature: missing"),
    ("missing key", _drop_column("dept"), "column present: dept: missing"),
    ("date as strings", _as_strings("ds"), "datetime type: ds: 80 rows (100.00%)"),
    ("target as strings", _as_strings("y"), "numeric type: y: 80 rows (100.00%)"),
    (
        "target as bool",
        lambda d: _with_history(d, lambda h: h.assign(y=h["y"] > 0)),
        "numeric type: y: dtype bool",
    ),
    ("null key", _set(5, "store", None), "not null: store: 1 rows (1.25%)"),
    ("null series id", _set(5, "unique_id", None), "not null: unique_id: 1 rows (1.25%)"),
    ("null date", _set(5, "ds", pd.NaT), "not null: ds: 1 rows (1.25%)"),
    ("null target", _set(5, "y", np.nan), "not null: y: 1 rows (1.25%)"),
    ("duplicate series-date", _duplicate_row, "unique (series, date): unique_id, ds: 2 rows"),
    ("gap in a series", _gap, "regular frequency (W-FRI = 7 days): ds: 1 rows"),
    ("dates off the anchor", _saturdays, "dates on W-FRI anchor (Friday): ds: 80 rows"),
    ("target too high", _set(7, "y", 1e9), "in range [-1e+06, 1e+08]: y: 1 rows (1.25%)"),
    ("target too low", _set(7, "y", -5e6), "in range [-1e+06, 1e+08]: y: 1 rows (1.25%)"),
    (
        "covariate out of range",
        _set(9, "temperature", 500.0),
        "in range [-60, 130]: temperature: 1",
    ),
    ("covariate infinite", _set(9, "fuel_price", np.inf), "in range [0, 20]: fuel_price: 1 rows"),
    ("too-short history", _short_series, "minimum history (>= 13 obs): unique_id: 1 series (25"),
    ("future overlaps history", _future_overlap, "future: after history's last date: ds: 4 rows"),
    ("future duplicate", _future_duplicate, "future: unique (series, date): unique_id, ds: 2 rows"),
]


def _failed_names(report: ValidationReport) -> list[str]:
    return [c.name for c in report.checks if not c.success]


def test_clean_data_passes() -> None:
    """Regular, complete, in-range data passes every check and reports its size."""
    data = _make_clean()
    report = check_sales(data, CFG, as_of=LAST.date())
    assert report.passed, report.summary()
    assert (report.n_rows, report.n_series) == (80, 4)
    assert report.summary() == ""
    assert report.short_series == []
    names = {c.name for c in report.checks}
    assert {"unique (series, date)", "not null", "column present"} <= names
    assert "future: after history's last date" in names


def test_clean_daily_data_passes() -> None:
    """Daily data is checked against a one-day step and has no weekday anchor."""
    report = validate_sales(_make_clean(freq="D"), CFG)
    assert report.passed, report.summary()
    assert "regular frequency (D = 1 days)" in {c.name for c in report.checks}


def test_daily_gap_is_rejected() -> None:
    """A missing day in a daily series fails the frequency check with a 2-day step."""
    data = _make_clean(freq="D")
    h = data.history
    data = replace(data, history=h.drop(index=10).reset_index(drop=True))
    with pytest.raises(DataValidationError, match=r"regular frequency \(D = 1 days\): ds: 1 rows"):
        check_sales(data, CFG)


def test_synthetic_data_passes() -> None:
    """The package's seeded synthetic source passes the gate with the default settings."""
    synthetic = pytest.importorskip("salesflow.synthetic")
    from salesflow.config.settings import SyntheticSection

    data = synthetic.generate_sales(SyntheticSection(n_stores=2, n_depts=3, periods=60))
    report = validate_sales(data, ValidationSection())
    assert report.passed, report.summary()


@pytest.mark.parametrize(
    ("mutate", "expected"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_data_is_rejected(mutate: Callable[[SalesData], SalesData], expected: str) -> None:
    """Each kind of bad data fails with a message naming the check, the column and the count."""
    with pytest.raises(DataValidationError) as info:
        check_sales(mutate(_make_clean()), CFG)
    message = str(info.value)
    assert expected in message, message
    assert not info.value.report.passed
    assert isinstance(info.value, ValueError)


def test_date_after_as_of_is_rejected() -> None:
    """Rows dated after the as-of date fail, one per series, with the offending dates."""
    with pytest.raises(DataValidationError) as info:
        check_sales(_make_clean(), CFG, as_of=AS_OF)
    line = f"no dates after as-of {AS_OF:%Y-%m-%d}: ds: 4 rows (5.00%)"
    assert line in str(info.value)
    assert f"ds={LAST:%Y-%m-%d}" in str(info.value)


def test_gap_sample_names_series_date_and_step() -> None:
    """The frequency check's sample names the series, the date after the gap and the step."""
    report = validate_sales(_gap(_make_clean()), CFG)
    (check,) = [c for c in report.checks if c.name.startswith("regular frequency")]
    after = START + pd.Timedelta(weeks=6)
    assert check.sample == [{"unique_id": "1/7", "ds": after, "value": 14.0}]
    assert f"e.g. unique_id=1/7 ds={after:%Y-%m-%d} value=14" in report.summary()


def test_short_series_within_tolerance_pass_and_can_be_dropped() -> None:
    """Short series within max_short_series_share pass, are listed and can be dropped."""
    data = _short_series(_make_clean())
    report = check_sales(data, ValidationSection(max_short_series_share=0.25))
    assert report.short_series == ["2/1"]
    (check,) = [c for c in report.checks if c.name.startswith("minimum history")]
    assert check.success and check.unexpected_count == 1
    kept = drop_short_series(data, report)
    assert "2/1" not in set(kept.history["unique_id"]) | set(kept.future["unique_id"])
    assert kept.n_series == 3


def test_sample_rows_are_capped() -> None:
    """At most cfg.sample_rows offending rows are kept per check."""
    data = _with_history(_make_clean(), lambda h: h.assign(y=np.where(h.index < 30, 1e9, h["y"])))
    report = validate_sales(data, ValidationSection(sample_rows=3))
    (check,) = [c for c in report.checks if c.column == "y" and c.name.startswith("in range")]
    assert check.unexpected_count == 30 and len(check.sample) == 3
    assert set(check.sample[0]) == {"unique_id", "ds", "value"}


def test_markdown_lists_every_check_and_failed_samples() -> None:
    """to_markdown has a row per check, marks failures and shows their sample rows."""
    data = _set(7, "y", 1e9)(_gap(_make_clean()))
    report = validate_sales(data, CFG)
    md = report.to_markdown()
    assert md.startswith("## Data validation: FAILED (2 of ")
    assert md.count("\n| ") == len(report.checks) + 2  # header, rule, one row per check
    for name in _failed_names(report):
        assert f"| **FAIL** | {name} |" in md
    assert "value=14" in md and "value=1e+09" in md
    assert "`expect_column_values_to_be_in_set`" in md


def test_error_lists_every_failed_check() -> None:
    """The exception message is one line naming every failed check, in the report's order."""
    data = _set(7, "y", np.nan)(_duplicate_row(_make_clean()))
    with pytest.raises(DataValidationError) as info:
        check_sales(data, CFG)
    report = info.value.report
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"sales data failed validation: {len(report.failed)} of ")
    positions = [message.index(line) for line in report.summary().splitlines()]
    assert positions == sorted(positions)
    assert {"not null", "unique (series, date)"} <= set(_failed_names(report))


def test_missing_column_skips_its_checks() -> None:
    """A missing target column fails 'column present' and skips the checks that need it."""
    report = validate_sales(_drop_column("y")(_make_clean()), CFG)
    assert _failed_names(report) == ["column present"]
    assert any("'y'" in s for s in report.skipped)


def test_empty_future_is_not_checked() -> None:
    """A source without future covariates runs no future checks."""
    data = _make_clean()
    report = check_sales(replace(data, future=data.future.iloc[:0]), CFG)
    assert not [c for c in report.checks if c.name.startswith("future")]


def test_import_does_not_load_great_expectations() -> None:
    """Importing the module leaves Great Expectations (a ~2-3 s import) unloaded."""
    code = "import sys, salesflow.validation; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_as_of_none_runs_no_as_of_check() -> None:
    """Without an as-of date there is no as-of check."""
    report = validate_sales(_make_clean(), CFG, as_of=None)
    assert not [c for c in report.checks if "as-of" in c.name]
    assert validate_sales(_make_clean(), CFG, as_of=dt.date(2030, 1, 1)).passed


def test_a_few_gaps_are_tolerated_up_to_max_gap_share() -> None:
    """Real series have some missing weeks: gaps pass while their share <= max_gap_share."""
    data = _gap(_make_clean())
    assert validate_sales(data, ValidationSection(max_short_series_share=0.0)).passed
    assert not validate_sales(data, CFG).passed


def _stray_row(data: SalesData, when: str) -> SalesData:
    """One extra history row of series 1/1 dated ``when`` (a stray row from the future)."""
    h = data.history
    row = h[h["unique_id"] == "1/1"].iloc[[-1]].assign(ds=pd.Timestamp(when))
    return replace(data, history=pd.concat([h, row], ignore_index=True))


def test_history_after_today_is_rejected_with_its_rows() -> None:
    """History dated after the run's today fails, naming the series and the date."""
    today = (LAST - pd.Timedelta(weeks=1)).date()
    cfg = CFG.model_copy(update={"today": today})
    with pytest.raises(DataValidationError) as info:
        check_sales(_make_clean(), cfg)
    assert f"no dates after today {today:%Y-%m-%d}: ds: 4 rows (5.00%)" in str(info.value)
    assert f"ds={LAST:%Y-%m-%d}" in str(info.value)
    assert check_sales(_make_clean(), CFG.model_copy(update={"today": LAST.date()})).passed


def test_a_stray_row_in_2099_fails_against_the_real_today() -> None:
    """By default today is the current date: one stray row dated 2099 fails the gate."""
    report = validate_sales(_stray_row(_make_clean(), "2099-01-02"), ValidationSection())
    today = dt.datetime.now(dt.UTC).date()
    (check,) = [c for c in report.checks if c.name == f"no dates after today {today:%Y-%m-%d}"]
    assert not check.success and check.unexpected_count == 1
    assert check.sample == [{"unique_id": "1/1", "ds": pd.Timestamp("2099-01-02")}]


def test_a_file_entirely_after_today_fails() -> None:
    """A file whose every date is after today fails on every row."""
    data = _make_clean()
    years = pd.DateOffset(years=90)
    later = replace(
        data,
        history=data.history.assign(ds=data.history["ds"] + years),
        future=data.future.iloc[:0],
    )
    report = validate_sales(later, ValidationSection())
    (check,) = [c for c in report.checks if c.name.startswith("no dates after today")]
    assert check.unexpected_count == len(later.history) and not report.passed


def test_future_covariates_are_bounded_by_today_plus_horizon() -> None:
    """Future covariates may be after today, but not beyond today + horizon periods
    (or validation.max_future_periods)."""
    cfg = CFG.model_copy(update={"today": LAST.date()})
    assert validate_sales(_make_clean(), cfg, horizon=4).passed
    report = validate_sales(_make_clean(), cfg, horizon=3)
    bound = LAST + pd.Timedelta(weeks=3)
    name = f"future: no dates after today + 3 periods ({bound:%Y-%m-%d})"
    (check,) = [c for c in report.checks if c.name == name]
    assert check.unexpected_count == 4 and not report.passed
    wider = cfg.model_copy(update={"max_future_periods": 4})
    assert validate_sales(_make_clean(), wider, horizon=3).passed


def test_a_stray_future_row_in_2099_fails() -> None:
    """A 2099 covariate row (e.g. a stray history row moved to the future by as_of) fails."""
    data = _make_clean()
    stray = data.future.iloc[[0]].assign(ds=pd.Timestamp("2099-01-02"))
    data = replace(data, future=pd.concat([data.future, stray], ignore_index=True))
    report = validate_sales(data, ValidationSection())
    failed = [c for c in report.failed if c.name.startswith("future: no dates after today")]
    assert len(failed) == 1 and failed[0].unexpected_count == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("1/2", "3"), ("1", "2/3")),
        (("1%2F2", "3"), ("1/2", "3")),
        (("a%", "b"), ("a", "%b")),
        (("x/", "y"), ("x", "/y")),
    ],
)
def test_series_ids_of_different_keys_never_collide(a: tuple, b: tuple) -> None:
    """Keys holding the separator give distinct ids, so two series are never merged."""
    from salesflow.data.canonical import canonical_frame

    rows = pd.DataFrame(
        {"store": [a[0], b[0]], "dept": [a[1], b[1]], "ds": ["2012-01-06"] * 2, "y": [1, 2]}
    ).assign(is_holiday=False)
    out = canonical_frame(rows, ["store", "dept"], [], [])
    assert out["unique_id"].nunique() == 2
    assert set(zip(out["store"], out["dept"], strict=True)) == {a, b}


def test_plain_series_ids_are_unchanged() -> None:
    """Keys without '/' or '%' keep the ids champions and warehouse rows already name."""
    frame = pd.DataFrame({"store": [1, 12], "dept": ["7", "A-3"]})
    assert make_unique_id(frame, ["store", "dept"]).tolist() == ["1/7", "12/A-3"]
