"""The training-time levers: the row cap (model.max_train_rows) and concurrent fits."""

from __future__ import annotations

import threading

import pandas as pd

from salesflow.modelling.backtest import run_backtest
from salesflow.modelling.groups import group_means_from
from salesflow.modelling.training import make_forecaster


def _with_model(settings, **model):
    return settings.model_copy(update={"model": settings.model.model_copy(update=model)})


def test_row_cap_fits_on_a_seeded_sample_of_exactly_that_many_rows(small_data, small_settings):
    """A cap below the row count trains on exactly the cap, the same rows every time."""
    full = make_forecaster(_with_model(small_settings, max_train_rows=None)).fit(small_data)
    assert full.n_train_rows_ == full.n_candidate_rows_ > 1000
    capped = _with_model(small_settings, max_train_rows=1000)
    one = make_forecaster(capped).fit(small_data)
    two = make_forecaster(capped).fit(small_data)
    assert one.n_train_rows_ == 1000 and one.n_candidate_rows_ == full.n_train_rows_
    p1, p2, pf = (m.predict(small_data)["forecast"] for m in (one, two, full))
    pd.testing.assert_series_equal(p1, p2)
    assert not p1.equals(pf)  # a sample is not all the rows


def test_sampled_design_equals_the_sample_of_the_full_design(small_data, small_settings):
    """The capped fit's matrix (sample rows only, group means of every row) is the full
    matrix's sampled rows: memory follows the cap, the numbers do not change."""
    model = make_forecaster(_with_model(small_settings, max_train_rows=1000))
    rows = model.training_rows(small_data)
    assert model.group_features_  # store x dept: group means span rows outside the sample
    keep = model._row_sample(len(rows))
    full = model._design(rows, small_data).iloc[keep].reset_index(drop=True)
    means = group_means_from(model.group_sums(rows, small_data))
    pd.testing.assert_frame_equal(model._design(rows.iloc[keep], small_data, means), full)


def test_row_cap_above_the_row_count_changes_nothing(small_data, small_settings):
    """A cap larger than the rows uses every row: the same forecasts as no cap."""
    none = make_forecaster(_with_model(small_settings, max_train_rows=None)).fit(small_data)
    big = make_forecaster(_with_model(small_settings, max_train_rows=10**7)).fit(small_data)
    assert big.n_train_rows_ == none.n_train_rows_
    pd.testing.assert_frame_equal(none.predict(small_data), big.predict(small_data))


def test_the_cap_is_a_setting_the_clone_keeps(small_settings):
    """clone() (backtest and challenger models) keeps the cap and the other settings."""
    model = make_forecaster(_with_model(small_settings, max_train_rows=1234))
    again = model.clone()
    assert again.max_train_rows == 1234
    assert again.describe() == model.describe()


def test_backtest_origins_fitted_side_by_side_equal_one_after_the_other(small_data, small_settings):
    """workers=2 fits origins in two threads at once, with the same frame as workers=1."""
    threads: set[str] = set()

    def make():
        threads.add(threading.current_thread().name)
        return make_forecaster(small_settings)

    seen: list[pd.Timestamp] = []
    serial = run_backtest(small_data, lambda: make_forecaster(small_settings), 3, 8).frame
    side = run_backtest(
        small_data, make, 3, 8, workers=2, on_origin=lambda o, _m: seen.append(o)
    ).frame
    pd.testing.assert_frame_equal(serial, side)
    assert seen == sorted(seen) and len(seen) == 3  # called oldest first
    assert len({t for t in threads if t.startswith("backtest")}) == 2


def test_clone_of_a_champion_pickled_before_a_setting_keeps_its_behaviour(small_settings):
    """Settings missing on an old champion: min_forecast None (never clipped), others default."""
    old = make_forecaster(small_settings)
    del old.min_forecast, old.max_train_rows, old.native_categorical
    again = old.clone()
    assert again.min_forecast is None
    assert again.max_train_rows is None and again.native_categorical is False
