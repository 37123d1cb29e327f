"""The seeded synthetic generator: determinism, schema, calendar, raggedness, drift."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pytest

from salesflow.config.settings import DriftInjection, SyntheticSection
from salesflow.data.canonical import WALMART_COVARIATES
from salesflow.data.schema import DATE, HOLIDAY, ID, TARGET
from salesflow.data.synthetic import generate_sales

HISTORY_COLUMNS = [
    ID,
    "store",
    "dept",
    DATE,
    TARGET,
    HOLIDAY,
    "temperature",
    "fuel_price",
    "markdown1",
    "markdown2",
    "markdown3",
    "markdown4",
    "markdown5",
    "cpi",
    "unemployment",
    "store_type",
    "store_size",
]
# IsHoliday weeks of the Walmart files, 2010-02-05 .. 2012-10-26.
WALMART_HOLIDAY_WEEKS = [
    "2010-02-12",
    "2010-09-10",
    "2010-11-26",
    "2010-12-31",
    "2011-02-11",
    "2011-09-09",
    "2011-11-25",
    "2011-12-30",
    "2012-02-10",
    "2012-09-07",
]
SMALL = SyntheticSection(n_stores=4, n_depts=5, periods=60, seed=3)


def _cfg(**changes: object) -> SyntheticSection:
    return SMALL.model_copy(update=changes)


def test_same_seed_gives_identical_frames() -> None:
    """Two runs with the same seed produce identical history and future."""
    a, b = generate_sales(SMALL), generate_sales(SMALL)
    pd.testing.assert_frame_equal(a.history, b.history)
    pd.testing.assert_frame_equal(a.future, b.future)


def test_different_seeds_differ() -> None:
    """Another seed gives other sales and covariates."""
    a, b = generate_sales(_cfg(seed=1)), generate_sales(_cfg(seed=2))
    assert not np.allclose(a.history[TARGET].head(50), b.history[TARGET].head(50))
    assert not np.allclose(a.history["temperature"].head(50), b.history["temperature"].head(50))


@pytest.mark.parametrize("future_periods", [0, 7, 104])
def test_future_periods_do_not_change_history(future_periods: int) -> None:
    """The length of the future never changes the generated history."""
    base = generate_sales(SMALL, future_periods=13)
    other = generate_sales(SMALL, future_periods=future_periods)
    pd.testing.assert_frame_equal(base.history, other.history)


@pytest.mark.parametrize("freq", ["W-FRI", "D"])
def test_schema_columns_and_dtypes(freq: str) -> None:
    """History and future follow the canonical schema, sorted by unique_id and ds."""
    sales = generate_sales(_cfg(freq=freq), future_periods=5)
    hist, fut = sales.history, sales.future
    assert list(hist.columns) == HISTORY_COLUMNS
    assert list(fut.columns) == [c for c in HISTORY_COLUMNS if c != TARGET]
    assert hist[DATE].dtype == "datetime64[ns]" and hist[TARGET].dtype == "float64"
    assert hist[HOLIDAY].dtype == bool and fut[HOLIDAY].dtype == bool
    assert (hist[WALMART_COVARIATES].dtypes == "float64").all()
    assert hist["store"].dtype == "int64" and hist["dept"].dtype == "int64"
    assert hist["store_size"].dtype == "int64"
    assert set(hist["store_type"]) <= {"A", "B", "C"}
    assert (hist[ID] == hist["store"].astype(str) + "/" + hist["dept"].astype(str)).all()
    for frame in (hist, fut):
        expected = frame.sort_values([ID, DATE]).reset_index(drop=True)
        pd.testing.assert_frame_equal(frame, expected)
    assert sales.keys == ["store", "dept"] and sales.covariates == WALMART_COVARIATES
    assert sales.static == ["store_type", "store_size"] and sales.freq == freq
    assert sales.n_series == 20


def test_static_and_covariates_are_consistent() -> None:
    """Static columns are constant per series; covariates are shared per store and date."""
    hist = generate_sales(SMALL).history
    assert (hist.groupby(ID)[["store_type", "store_size"]].nunique() == 1).all().all()
    assert (hist.groupby(["store", DATE])[WALMART_COVARIATES].nunique() == 1).all().all()


@pytest.mark.parametrize("freq", ["W-FRI", "D"])
def test_covariates_in_realistic_ranges(freq: str) -> None:
    """Every covariate stays in the range seen in retail data, history and future alike."""
    sales = generate_sales(_cfg(freq=freq, periods=143, n_stores=10))
    both = pd.concat([sales.history, sales.future])
    bounds = {
        "temperature": (-10, 105),
        "fuel_price": (2.4, 4.6),
        "cpi": (120, 240),
        "unemployment": (3, 14),
    }
    for col, (lo, hi) in bounds.items():
        assert both[col].between(lo, hi).all(), col
    markdowns = both[[f"markdown{i}" for i in range(1, 6)]]
    assert (markdowns >= 0).all().all()
    assert sales.history.notna().all().all() and sales.future.notna().all().all()


def test_markdowns_start_mostly_zero_then_positive() -> None:
    """Markdowns are almost always 0 early in the history and mostly positive later."""
    hist = generate_sales(_cfg(periods=143)).history
    early = hist[hist[DATE] < hist[DATE].min() + pd.Timedelta(weeks=60)]
    late = hist[hist[DATE] > hist[DATE].max() - pd.Timedelta(weeks=30)]
    assert (early["markdown1"] == 0).mean() > 0.95
    assert (late["markdown1"] > 0).mean() > 0.7


def test_holiday_weeks_match_walmart() -> None:
    """Weekly holiday flags fall on the Walmart IsHoliday weeks (e.g. 2010-12-31)."""
    hist = generate_sales(_cfg(start=dt.date(2010, 2, 5), periods=143)).history
    flagged = sorted(hist.loc[hist[HOLIDAY], DATE].dt.strftime("%Y-%m-%d").unique())
    assert flagged == WALMART_HOLIDAY_WEEKS


def test_daily_holidays_are_the_days_themselves() -> None:
    """With daily data, the holiday flag marks the holiday itself."""
    sales = generate_sales(_cfg(freq="D", start=dt.date(2010, 11, 1), periods=60))
    flagged = sorted(sales.history.loc[sales.history[HOLIDAY], DATE].unique())
    assert flagged == [pd.Timestamp("2010-11-25"), pd.Timestamp("2010-12-25")]


def test_pre_christmas_week_is_the_busiest() -> None:
    """Total sales peak in the last week before Christmas, above Thanksgiving week."""
    hist = generate_sales(_cfg(periods=143, n_stores=6, n_depts=20)).history
    total = hist.groupby(DATE)[TARGET].sum()
    assert total.idxmax() in (pd.Timestamp("2010-12-24"), pd.Timestamp("2011-12-23"))
    assert total[pd.Timestamp("2011-11-25")] > 1.2 * total.median()


@pytest.mark.parametrize(("share", "any_late"), [(0.0, False), (0.4, True)])
def test_ragged_starts(share: float, any_late: bool) -> None:
    """A share of series starts late, each keeping at least 20 observations."""
    hist = generate_sales(_cfg(ragged_share=share, n_depts=10)).history
    first = hist.groupby(ID)[DATE].min()
    assert (first > hist[DATE].min()).any() == any_late
    assert hist.groupby(ID).size().min() >= 20
    if any_late:
        assert (first > hist[DATE].min()).mean() == pytest.approx(share, abs=0.05)


def test_negative_sales_are_rare_and_small() -> None:
    """About 0.3% of rows are small returns (negative sales)."""
    hist = generate_sales(_cfg(n_stores=10, n_depts=20, periods=143)).history
    negative = hist[TARGET] < 0
    assert 0.001 < negative.mean() < 0.01
    assert hist.loc[negative, TARGET].min() >= -100


@pytest.mark.parametrize(("freq", "future_periods"), [("W-FRI", 52), ("W-FRI", 3), ("D", 10)])
def test_future_has_the_next_periods_for_every_series(freq: str, future_periods: int) -> None:
    """Future rows cover the periods right after the last date, for every series."""
    sales = generate_sales(_cfg(freq=freq), future_periods=future_periods)
    expected = pd.date_range(sales.last_date, periods=future_periods + 1, freq=freq)[1:]
    fut = sales.future
    assert set(fut[ID]) == set(sales.history[ID])
    for _, dates in fut.groupby(ID)[DATE]:
        assert list(dates) == list(expected)


def test_drift_shifts_named_covariates_of_named_stores_from_start() -> None:
    """Drift moves only the named covariates and sales, of the named stores, from its start."""
    start = pd.Timestamp("2010-10-01")
    drift = DriftInjection(
        start=start.date(), covariate_shift={"temperature": 2.0}, level_shift=0.3, stores=[1, 2]
    )
    base, drifted = generate_sales(SMALL), generate_sales(_cfg(drift=drift))
    for part in ("history", "future"):
        a, b = getattr(base, part), getattr(drifted, part)
        hit = (a[DATE] >= start) & a["store"].isin([1, 2])
        untouched = [c for c in a.columns if c not in ("temperature", TARGET)]
        pd.testing.assert_frame_equal(a[untouched], b[untouched])
        pd.testing.assert_frame_equal(a[~hit], b[~hit])
        shift = (b["temperature"] - a["temperature"])[hit]
        expected = 2.0 * base.history["temperature"].std(ddof=0)
        np.testing.assert_allclose(shift, expected, rtol=0.05)  # std over all stores' history
        if TARGET in a:
            np.testing.assert_allclose(b.loc[hit, TARGET], a.loc[hit, TARGET] * 1.3, atol=0.01)


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        (DriftInjection(start=dt.date(2010, 6, 4), covariate_shift={"price": 1.0}), "price"),
        (DriftInjection(start=dt.date(2010, 6, 4), level_shift=0.1, stores=[99]), "99"),
    ],
)
def test_drift_with_unknown_names_fails(drift: DriftInjection, message: str) -> None:
    """Drift naming an unknown covariate or store raises a ValueError naming it."""
    with pytest.raises(ValueError, match=message):
        generate_sales(_cfg(drift=drift))


def test_walmart_sized_panel_is_fast() -> None:
    """45 stores x 81 departments x 143 weeks are generated in under 3 seconds."""
    cfg = SyntheticSection(n_stores=45, n_depts=81, periods=143)
    started = time.perf_counter()
    sales = generate_sales(cfg)
    assert time.perf_counter() - started < 3.0
    assert sales.n_series == 45 * 81
