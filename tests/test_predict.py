"""On-demand predictions (serving.predict, serving.predict_batch) and the history cache."""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from salesflow.config.settings import load_settings
from salesflow.data.schema import DATE, ID
from salesflow.data.sources import load_sales
from salesflow.errors import UserError
from salesflow.modelling.scoring import fill_future_covariates, score_series
from salesflow.modelling.training import make_forecaster
from salesflow.serving.history import HistoryCache
from salesflow.serving.predict import (
    BOUNDS,
    Override,
    PredictInputError,
    TooManySeries,
    forecast_dates,
    peer_series,
    predict_series,
)
from salesflow.serving.predict_batch import predict_batch_csv

WALMART_MINI = Path(__file__).parent / "fixtures" / "walmart_mini"
COLUMNS = [ID, "store", "dept", DATE, "horizon", "forecast", *BOUNDS]


def _with_intervals(model):
    """Interval widths from a made-up residual sample, so the bounds columns are real."""
    rng = np.random.default_rng(0)
    h = np.repeat(np.arange(1, model.horizon + 1), 40)
    bt = pd.DataFrame({"horizon": h, "y": rng.normal(0, 1, len(h)), "forecast": 0.0, "scale": 1.0})
    return model.set_intervals(bt)


@pytest.fixture(scope="module")
def settings():
    """Test settings with SVD denoising over groups of 3 (a department's 3 stores)."""
    return load_settings("test", features={"denoise_rank": 2})


@pytest.fixture(scope="module")
def champion(settings, small_data):
    """A real forecaster fitted on the small synthetic panel, with intervals."""
    return _with_intervals(make_forecaster(settings).fit(small_data))


@pytest.fixture(scope="module")
def promo_data(small_data):
    """The small panel where markdown1 is 0 or 5000 at random and doubles the sales."""
    rng = np.random.default_rng(1)

    def promo(frame):
        return frame.assign(markdown1=rng.choice([0.0, 5000.0], len(frame), p=[0.7, 0.3]))

    history = promo(small_data.history)
    history["y"] = history["y"] * (1 + history["markdown1"] / 5000)
    return replace(small_data, history=history, future=promo(small_data.future))


@pytest.fixture(scope="module")
def promo_model(settings, promo_data):
    """A forecaster that learned the markdown1 effect."""
    return make_forecaster(settings).fit(promo_data)


def _batch(model, data, ids, origin=None):
    pred, _ = score_series(model, data, origin)
    return pred[pred[ID].isin(ids)].sort_values([ID, "horizon"])[COLUMNS].reset_index(drop=True)


def _series(*ids):
    return [dict(zip(("store", "dept"), i.split("/"), strict=True)) for i in ids]


# --- equal to the batch forecast ---------------------------------------------------------


def test_predict_series_equals_batch_scoring(champion, small_data):
    """No overrides, default origin: the batch forecast's rows of those series, bounds too."""
    got = predict_series(champion, small_data, _series("1/2", "3/3"))
    want = _batch(champion, small_data, ["1/2", "3/3"])
    pd.testing.assert_frame_equal(got.frame, want)
    assert got.notes["path"] == "cached"
    assert got.origin == small_data.last_date + pd.Timedelta(weeks=1)
    assert got.overridden == [] and got.errors == []
    assert got.frame[list(BOUNDS)].notna().all().all()


def test_peer_path_equals_batch_scoring_at_an_earlier_origin(champion, small_data):
    """From the requested series and their peers only, the same as the whole panel's."""
    origin = small_data.last_date - pd.Timedelta(weeks=10)
    got = predict_series(champion, small_data, _series("2/3"), origin=origin)
    pd.testing.assert_frame_equal(got.frame, _batch(champion, small_data, ["2/3"], origin))
    assert got.origin == origin and got.notes["path"] == "peers"


def test_a_no_op_override_keeps_the_batch_forecast(champion, small_data):
    """multiply=1 on every period goes through the override path and changes nothing."""
    got = predict_series(
        champion, small_data, _series("1/1"), [Override(covariate="temperature", multiply=1)]
    )
    pd.testing.assert_frame_equal(got.frame, _batch(champion, small_data, ["1/1"]))
    assert got.notes["path"] == "peers"
    assert len(got.overridden) == champion.horizon
    assert all(r["before"] == r["after"] for r in got.overridden)


def test_peers_share_a_key_value():
    """The peers of store 1/dept 2 are store 1's departments and dept 2's stores."""
    from salesflow.data.schema import SalesData, make_unique_id

    keys = pd.MultiIndex.from_product([[1, 2, 3], [1, 2]], names=["store", "dept"]).to_frame()
    h = keys.reset_index(drop=True).assign(ds=pd.Timestamp("2012-01-06"), y=1.0)
    h.insert(0, ID, make_unique_id(h, ["store", "dept"]))
    data = SalesData(history=h, future=h.iloc[:0].drop(columns="y"), keys=["store", "dept"])
    assert sorted(peer_series(data, ["1/2"])) == ["1/1", "1/2", "2/2", "3/2"]
    assert peer_series(replace(data, keys=["store"]), ["1/2"]) == ["1/2"]


def test_walmart_folder_predictions_equal_batch_scoring(champion):
    """On the Walmart-format fixture (gaps, a late start, a return), as the batch forecast."""
    data = load_sales(
        load_settings("test", data={"source": "walmart", "path": str(WALMART_MINI)}).data
    )
    ids = sorted(data.history[ID].unique())
    got = predict_series(champion, data, _series(*ids))
    pd.testing.assert_frame_equal(got.frame, _batch(champion, data, ids))


def test_a_missing_known_ahead_value_blocks_only_its_series(champion, small_data):
    """markdown1 known ahead but missing for 3/4 in the window: the batch forecast fails;
    1/1 (no peer of 3/4) is still forecast, 3/4 is refused with a message naming it."""
    future = small_data.future.copy()
    future.loc[(future[ID] == "3/4") & (future[DATE] == future[DATE].min()), "markdown1"] = np.nan
    data = replace(small_data, future=future, known_ahead=["markdown1"])
    with pytest.raises(UserError, match="known-ahead covariate 'markdown1' is missing"):
        score_series(champion, data)
    got = predict_series(champion, data, _series("1/1"))
    pd.testing.assert_frame_equal(got.frame, _batch(champion, small_data, ["1/1"]))
    assert got.notes["path"] == "peers"
    with pytest.raises(PredictInputError, match="'markdown1' is missing for 1 series"):
        predict_series(champion, data, _series("3/4"))


# --- overrides -----------------------------------------------------------------------------


def _window_value(model, data, uid, covariate, horizon):
    """The covariate's value the batch forecast feeds the model for that target."""
    origin = model.next_origin(data)
    known = data.as_of(origin - pd.Timedelta(weeks=1))
    filled, _, _ = fill_future_covariates(known, origin, model.horizon)
    f = filled.future
    date = origin + pd.Timedelta(weeks=horizon - 1)
    return float(f.loc[(f[ID] == uid) & (f[DATE] == date), covariate].iloc[0])


def test_an_override_reaches_the_model_at_its_period_only(promo_model, promo_data):
    """Markdown1 set to 5000 in a week without it: that week's forecast rises (the data
    double with it); the other weeks' forecasts stay; the record says what changed."""
    uid = "2/2"
    h = next(
        k
        for k in range(1, promo_model.horizon + 1)
        if _window_value(promo_model, promo_data, uid, "markdown1", k) == 0
    )
    history = promo_data.history.copy()
    base = predict_series(promo_model, promo_data, _series(uid)).frame
    got = predict_series(
        promo_model,
        promo_data,
        _series(uid),
        [Override(covariate="markdown1", horizon=h, value=5000)],
    )
    pd.testing.assert_frame_equal(promo_data.history, history)
    changed = got.frame["horizon"] == h
    assert (got.frame.loc[changed, "forecast"] > 1.3 * base.loc[changed, "forecast"]).all()
    pd.testing.assert_frame_equal(got.frame[~changed], base[~changed])
    date = forecast_dates(promo_model, promo_data)[h - 1]
    assert got.overridden == [
        {
            "series": {"store": "2", "dept": "2"},
            "covariate": "markdown1",
            "date": date.date().isoformat(),
            "before": 0.0,
            "after": 5000.0,
        }
    ]


def test_override_by_date_is_the_override_by_horizon(promo_model, promo_data):
    """date = the horizon's target date gives the same forecasts and record."""
    date = forecast_dates(promo_model, promo_data)[2]
    by_h = Override(covariate="markdown1", horizon=3, multiply=3)
    by_d = Override(covariate="markdown1", date=date.date(), multiply=3)
    a = predict_series(promo_model, promo_data, _series("1/3"), [by_h])
    b = predict_series(promo_model, promo_data, _series("1/3"), [by_d])
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.overridden == b.overridden
    before = _window_value(promo_model, promo_data, "1/3", "markdown1", 3)
    assert a.overridden[0]["before"] == before and a.overridden[0]["after"] == 3 * before


def test_an_override_with_keys_changes_only_that_series(promo_model, promo_data):
    """keys pick one of the requested series; the other keeps its forecast."""
    o = Override(keys={"store": "1"}, covariate="markdown1", value=5000)
    got = predict_series(promo_model, promo_data, _series("1/3", "2/3"), [o])
    base = predict_series(promo_model, promo_data, _series("2/3")).frame
    other = got.frame[got.frame[ID] == "2/3"].reset_index(drop=True)
    pd.testing.assert_frame_equal(other, base)
    assert {r["series"]["store"] for r in got.overridden} == {"1"}
    assert len(got.overridden) == promo_model.horizon


@pytest.fixture(scope="module")
def event_data(small_data):
    """The small panel with a categorical covariate 'event' ("0" or "a"; "a" lifts sales)."""
    rng = np.random.default_rng(2)

    def event(frame):
        return frame.assign(event=rng.choice(["0", "a"], len(frame), p=[0.8, 0.2]))

    history = event(small_data.history)
    history["y"] = history["y"] * np.where(history["event"] == "a", 1.5, 1.0)
    return replace(
        small_data, history=history, future=event(small_data.future), categorical=["event"]
    )


def test_a_categorical_override_sets_the_category(settings, event_data):
    """A categorical covariate takes a category (JSON 0 is "0") and the model reads it
    (event "a" everywhere forecasts more than "0" everywhere); multiply is refused."""
    model = make_forecaster(settings).fit(event_data)
    got = predict_series(
        model, event_data, _series("1/1"), [Override(covariate="event", value=0.0, horizon=1)]
    )
    (record,) = got.overridden
    assert record["after"] == "0" and record["before"] in ("0", "a")
    every = {
        c: predict_series(model, event_data, _series("1/1"), [Override(covariate="event", value=c)])
        for c in ("0", "a")
    }
    assert every["a"].frame["forecast"].mean() > 1.2 * every["0"].frame["forecast"].mean()
    with pytest.raises(PredictInputError, match="'event' is categorical"):
        predict_series(model, event_data, _series("1/1"), [Override(covariate="event", multiply=2)])


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("series", "overrides", "origin", "message"),
    [
        (_series("9/9"), [], None, r"not in the data \(store/dept: 9/9\)"),
        ([{"store": "1"}], [], None, r"missing \['dept'\]"),
        ([{"store": "1", "dept": "1", "aisle": "4"}], [], None, r"unknown \['aisle'\]"),
        ([], [], None, "no series given"),
        (_series("1/1"), [Override(covariate="sunshine", value=1)], None, "'sunshine' is not"),
        (_series("1/1"), [Override(covariate="cpi", horizon=99, value=1)], None, "horizon 99"),
        (
            _series("1/1"),
            [Override(covariate="cpi", date="2030-01-04", value=1)],
            None,
            "date 2030-01-04 is not a target date",
        ),
        (
            _series("1/1"),
            [Override(keys={"store": "2"}, covariate="cpi", value=1)],
            None,
            "not among the requested series",
        ),
        (
            _series("1/1"),
            [Override(keys={"aisle": "2"}, covariate="cpi", value=1)],
            None,
            r"keys \['aisle'\] are not key columns",
        ),
        (_series("1/1"), [Override(covariate="cpi", value="high")], None, "'high' .* not a number"),
        (_series("1/1"), [Override(covariate="cpi", multiply=1e300)], None, "beyond"),
        (_series("1/1"), [], "2030-01-04", "origin 2030-01-04 is not a forecast origin"),
        (_series("1/1"), [], "2011-06-02", "origin 2011-06-02 is not"),  # a Thursday
        (_series("1/1"), [], "soon", "origin 'soon' is not a date"),
        (_series("3/1"), [], "2011-06-03", "no observation before the origin 2011-06-03"),
    ],
)
def test_bad_requests_name_what_failed(champion, small_data, series, overrides, origin, message):
    """Each bad input raises PredictInputError (a UserError) whose message names it."""
    with pytest.raises(PredictInputError, match=message):
        predict_series(champion, small_data, series, overrides, origin=origin)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"value": 1, "multiply": 2}, "exactly one of value or multiply"),
        ({}, "exactly one of value or multiply"),
        ({"value": 1, "horizon": 1, "date": "2012-06-01"}, "date or horizon, not both"),
        ({"value": 1, "horizon": 0}, "greater than or equal to 1"),
        ({"multiply": float("inf")}, "finite"),
    ],
)
def test_override_model_rejects_contradictions(fields, message):
    """The Override model refuses both/neither value and multiply, date with horizon."""
    with pytest.raises(ValidationError, match=message):
        Override(covariate="cpi", **fields)


# --- batch CSV ---------------------------------------------------------------------------


def test_batch_csv_is_predict_series_of_its_rows(promo_model, promo_data):
    """Series and override rows in, the same forecasts as predict_series out, as CSV."""
    text = "store,dept,covariate,horizon,value,multiply\n1,1,,,,\n2,2,markdown1,2,5000,\n"
    got = predict_batch_csv(promo_model, promo_data, text, 10, extra_columns={"model_version": "7"})
    want = predict_series(
        promo_model,
        promo_data,
        _series("1/1", "2/2"),
        [Override(keys={"store": "2", "dept": "2"}, covariate="markdown1", horizon=2, value=5000)],
    )
    assert got.errors == [] and got.n_series == 2
    back = pd.read_csv(pd.io.common.StringIO(got.csv))
    assert list(back.columns[:6]) == [
        ID,
        "store",
        "dept",
        "forecast_origin",
        "target_date",
        "horizon",
    ]
    np.testing.assert_allclose(back["forecast"], want.frame["forecast"])
    assert (back["model_version"] == 7).all()
    assert (back["forecast_origin"] == str(want.origin.date())).all()
    assert list(back["target_date"]) == [str(d.date()) for d in want.frame[DATE]]


def test_batch_bad_rows_become_row_errors(champion, small_data):
    """Bad rows are reported with their line and left out; good rows are forecast."""
    text = (
        "store,dept,covariate,horizon,date,value,multiply\n"
        "1,1,,,,,\n"  # 2: good
        "9,9,,,,,\n"  # 3: unknown series
        "2,,,,,,\n"  # 4: empty key
        "1,2,cpi,x,,,\n"  # 5: horizon not a number
        "1,2,cpi,1,,much,\n"  # 6: value not a number
        "1,2,cpi,1.5,,1,\n"  # 7: horizon not whole
        "1,2,cpi,99,,1,\n"  # 8: outside the window
        "1,2,,,,5,\n"  # 9: no covariate
        "1,2,cpi,1,,1e300,\n"  # 10: too large for the model
        "1,1,,,,,\n"  # 11: repeats line 2
        "2,3,cpi,2,,,1.1\n"  # 12: good
    )
    got = predict_batch_csv(champion, small_data, text, 20)
    lines = {e.row: e.message for e in got.errors}
    assert sorted(lines) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "not in the data" in lines[3] and "'dept'" in lines[4] and "empty" in lines[4]
    assert "horizon 'x' is not a number" in lines[5]
    assert "'much'" in lines[6] and "whole number" in lines[7] and "horizon 99" in lines[8]
    assert "without a covariate" in lines[9] and "beyond" in lines[10]
    assert "repeats line 2" in lines[11]
    assert got.errors[0].series == {"store": "9", "dept": "9"}
    assert got.n_series == 2
    assert sorted(got.frame[ID].unique()) == ["1/1", "2/3"]
    assert len(got.frame) == 2 * champion.horizon


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the CSV is empty"),
        ("\ufeff \n", "the CSV is empty"),
        ("store,dept\n", "header but no rows"),
        ("store\n1\n", r"no column \['dept'\]"),
        ("store,dept,multipy\n1,1,2\n", r"unknown columns \['multipy'\]"),
        ("store,dept\n1,1\n1,2\n2,1\n1,1\n", "3 series, more than the limit of 2"),
        ('store,dept\n"1,1\n', "could not be read"),
    ],
)
def test_batch_file_errors_name_the_problem(champion, small_data, text, message):
    """Whole-file problems raise PredictInputError naming them (the limit included)."""
    with pytest.raises(PredictInputError, match=message):
        predict_batch_csv(champion, small_data, text, 2)


def test_batch_series_limit_is_its_own_error(champion, small_data):
    """More distinct series than max_series: TooManySeries (the API's 413), repeats count once."""
    text = "store,dept\n1,1\n1,1\n1,2\n"
    assert predict_batch_csv(champion, small_data, text, 2).n_series == 2
    with pytest.raises(TooManySeries, match="2 series, more than the limit of 1"):
        predict_batch_csv(champion, small_data, text, 1)


def test_batch_with_only_bad_rows_gives_a_header_and_errors(champion, small_data):
    """No usable row: an output CSV with only its header, and every row's error."""
    got = predict_batch_csv(champion, small_data, "store,dept\n9,9\n8,8\n", 5)
    assert got.n_series == 0 and [e.row for e in got.errors] == [2, 3]
    assert got.csv.splitlines()[0].startswith("unique_id,store,dept,forecast_origin")


# --- history cache -----------------------------------------------------------------------


@pytest.fixture()
def walmart_copy(tmp_path):
    """Settings reading a writable copy of the Walmart-format fixture folder."""
    folder = tmp_path / "walmart"
    shutil.copytree(WALMART_MINI, folder)
    return load_settings("test", data={"source": "walmart", "path": str(folder)}), folder


class _Counting:
    """load_sales, counting its calls (and failing when told to: an injected fault)."""

    def __init__(self):
        self.calls, self.fail = 0, False

    def __call__(self, section):
        self.calls += 1
        if self.fail:
            raise OSError("disk went away")
        return load_sales(section)


def test_history_is_loaded_once_across_threads(walmart_copy):
    """Sixteen threads asking at once share one load and one SalesData."""
    loader = _Counting()
    cache = HistoryCache(walmart_copy[0], loader=loader)
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loader.calls == 1 and cache.version == 1
    assert all(g is got[0] for g in got) and got[0].n_series == 5


def test_history_reloads_when_a_file_changes_or_on_invalidate(walmart_copy):
    """A changed file (mtime/size) or invalidate() loads the source again; else it is kept."""
    settings, folder = walmart_copy
    loader = _Counting()
    cache = HistoryCache(settings, check_seconds=0, loader=loader)
    first = cache.get()
    assert cache.get() is first and loader.calls == 1
    stores = folder / "stores.csv"
    st = stores.stat()
    os.utime(stores, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert cache.get() is not first and loader.calls == 2
    cache.invalidate()
    cache.get()
    assert loader.calls == 3 and cache.version == 3


def test_history_change_is_looked_for_only_every_check_seconds(walmart_copy):
    """Within check_seconds of the last look, a changed file is not noticed yet."""
    settings, folder = walmart_copy
    loader = _Counting()
    cache = HistoryCache(settings, check_seconds=3600, loader=loader)
    first = cache.get()
    (folder / "stores.csv").write_text((folder / "stores.csv").read_text() + "\r")
    assert cache.get() is first and loader.calls == 1


def test_a_failed_reload_keeps_serving_the_loaded_history(walmart_copy):
    """Reload failing (injected fault): the loaded data is kept; a first load raises."""
    loader = _Counting()
    cache = HistoryCache(walmart_copy[0], loader=loader)
    first = cache.get()
    loader.fail = True
    cache.invalidate()
    assert cache.get() is first and cache.version == 1
    with pytest.raises(OSError, match="disk went away"):
        HistoryCache(walmart_copy[0], loader=loader).get()


def test_signature_of_a_long_folder_follows_its_side_files(tmp_path):
    """A long-format folder's signature covers the history, static and future files."""
    from salesflow.serving.history import source_signature

    for name in ("train.csv.zip", "store.csv", "future.csv", "notes.txt"):
        (tmp_path / name).write_text("x")
    data = load_settings("rossmann", data={"path": str(tmp_path)}).data
    before = source_signature(data)
    names = sorted(Path(p).name for p, _, _ in before)
    assert names == ["future.csv", "store.csv", "train.csv.zip"]
    (tmp_path / "notes.txt").write_text("not read by the source")
    assert source_signature(data) == before
    (tmp_path / "future.csv").write_text("a longer future")
    assert source_signature(data) != before
    assert source_signature(load_settings("test").data) == ()  # synthetic: nothing to watch


# --- daily data (Rossmann-like: one key, open/closed days, known-ahead promo) ------------


@pytest.fixture(scope="module")
def daily():
    """Three stores of daily sales closed on Sundays, promo known ahead, and a model."""
    from tests.test_features_daily import _daily, _model

    data = _daily(n_stores=3, days=420, future=14)
    return _model().fit(data), data


def test_daily_predictions_equal_batch_scoring(daily):
    """One key: the series alone is all the model reads; both paths equal the batch's."""
    model, data = daily
    pred, _ = score_series(model, data)
    want = pred[pred[ID] == "2"].sort_values("horizon")
    for overrides in ([], [Override(covariate="promo", multiply=1)]):
        got = predict_series(model, data, [{"store": "2"}], overrides)
        assert got.notes["path"] == ("peers" if overrides else "cached")
        np.testing.assert_array_equal(got.frame["forecast"], want["forecast"])


def test_closing_a_store_for_a_day_forecasts_zero_that_day(daily):
    """open=0 on an open day reaches the model's closed-day rule: that day's forecast is 0."""
    model, data = daily
    base = predict_series(model, data, [{"store": "1"}]).frame
    h = int(base.loc[base["forecast"] > 0, "horizon"].iloc[0])
    got = predict_series(
        model, data, [{"store": "1"}], [Override(covariate="open", horizon=h, value=0)]
    )
    assert got.frame.loc[got.frame["horizon"] == h, "forecast"].item() == 0
    assert got.overridden[0]["before"] == 1.0 and got.overridden[0]["after"] == 0.0
