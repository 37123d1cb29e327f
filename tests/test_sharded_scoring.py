"""Scoring in shards of series (the Dask path, run in one process) equals local scoring."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from salesflow.compute.shards import series_shards, shard_data
from salesflow.config.settings import load_settings
from salesflow.data.schema import DATE, ID
from salesflow.data.synthetic import generate_sales
from salesflow.modelling.groups import combine_group_sums, group_means_from, group_sums
from salesflow.modelling.scoring import KnownAheadMissing, score_in_shards, score_series
from salesflow.modelling.training import make_forecaster

N_SERIES = 18  # 3 stores x 6 departments: 6 groups of 3 series


@pytest.fixture(scope="module")
def settings():
    """Test settings with SVD denoising over each department's 3 stores."""
    return load_settings(
        "test", features={"denoise_rank": 2}, data={"synthetic": {"n_stores": 3, "n_depts": 6}}
    )


@pytest.fixture(scope="module")
def two_keys(settings):
    """A store x department panel (group features over stores and departments)."""
    return generate_sales(settings.data.synthetic)


@pytest.fixture(scope="module")
def one_key(two_keys):
    """The same series under a single key (no groups, no group features)."""
    h, f = two_keys.history, two_keys.future
    return replace(
        two_keys,
        history=h.assign(series=h[ID]).drop(columns=["store", "dept"]),
        future=f.assign(series=f[ID]).drop(columns=["store", "dept"]),
        keys=["series"],
        static=[],
    )


@pytest.fixture(scope="module")
def models(settings, two_keys, one_key):
    """A forecaster fitted on each panel."""
    return {
        "two": make_forecaster(settings).fit(two_keys),
        "one": make_forecaster(settings).fit(one_key),
    }


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values([ID, DATE]).reset_index(drop=True)


@pytest.mark.parametrize("panel", ["two", "one"])
@pytest.mark.parametrize("n_shards", [1, 2, 3])
def test_sharded_equals_predict(panel, n_shards, models, two_keys, one_key):
    """1, 2 or 3 shards give model.predict's forecasts (within 1e-9 relative) and notes."""
    data, model = (two_keys if panel == "two" else one_key), models[panel]
    local, local_notes = score_series(model, data)
    assert len(model.group_features_) == (6 if panel == "two" else 0)
    got, notes = score_in_shards(model, data, N_SERIES // n_shards)
    assert notes.n_shards == n_shards
    a, b = _sorted(got), _sorted(local)
    assert list(a.columns) == list(b.columns)
    assert a[[ID, DATE, "horizon"]].equals(b[[ID, DATE, "horizon"]])
    np.testing.assert_allclose(a["forecast"], b["forecast"], rtol=1e-9, atol=0)
    assert replace(notes, started_at=None, n_shards=1) == replace(local_notes, started_at=None)


def test_shards_hold_whole_groups(two_keys, models):
    """Each department's series are in one shard; shards are deterministic and complete."""
    shards = series_shards(two_keys, models["two"], 7)
    assert [len(s) for s in shards] == [6, 6, 6]
    assert sorted(i for s in shards for i in s) == sorted(two_keys.history[ID].unique())
    dept = two_keys.static_frame().set_index(ID)["dept"]
    for s in shards:
        members = set(dept.index[dept.isin(dept[s].unique())])
        assert members == set(s)
    assert series_shards(two_keys, models["two"], 7) == shards
    assert [len(s) for s in series_shards(two_keys, models["two"], 100)] == [N_SERIES]


def test_one_key_any_split(one_key, models):
    """Without groups the sorted ids are cut in plain chunks of shard_series."""
    shards = series_shards(one_key, models["one"], 5)
    assert [len(s) for s in shards] == [5, 5, 5, 3]
    assert [i for s in shards for i in s] == sorted(one_key.history[ID].unique())


def test_group_sums_add_up(models, two_keys):
    """Sums of disjoint parts, added, give the means of the whole frame."""
    model = models["two"]
    feats = model.predict_features(two_keys).feats
    codes = two_keys.static_frame().set_index(ID)
    whole = group_means_from(group_sums(feats, codes, ["store", "dept"]))
    ids = sorted(feats[ID].unique())
    parts = [
        group_sums(feats[feats[ID].isin(ids[k::3])], codes, ["store", "dept"]) for k in (0, 1, 2)
    ]
    split = group_means_from(combine_group_sums(parts))
    for k in whole:
        pd.testing.assert_frame_equal(split[k], whole[k])


def test_notes_merged_across_shards(models, two_keys):
    """Skipped, unseen and covariate-filled series in several shards are all reported."""
    model = models["two"]
    h, f = two_keys.history, two_keys.future
    origin = model.next_origin(two_keys)
    late = h[h[ID] == "1/1"].tail(1).assign(ds=origin + pd.Timedelta(weeks=1))  # none before
    new = h[h[ID] == "2/2"].assign(**{ID: "9/2", "store": 9})  # a store never trained on
    gappy = f[~((f[ID].isin(["1/3", "3/5"])) & (f[DATE] == origin))]  # temperature to fill
    data = replace(
        two_keys,
        history=pd.concat([h[h[ID] != "1/1"], late, new], ignore_index=True),
        future=pd.concat(
            [gappy[gappy[ID] != "1/1"], f[f[ID] == "2/2"].assign(**{ID: "9/2", "store": 9})]
        ),
    )
    local, local_notes = score_series(model, data, origin)
    got, notes = score_in_shards(model, data, 6, origin)
    assert notes.n_shards >= 3
    assert notes.skipped_no_history == local_notes.skipped_no_history == ["1/1"]
    assert notes.unseen_series == local_notes.unseen_series == ["9/2"]
    assert notes.covariate_rows_filled == local_notes.covariate_rows_filled == 2
    assert notes.covariate_columns_filled == local_notes.covariate_columns_filled
    np.testing.assert_allclose(_sorted(got)["forecast"], _sorted(local)["forecast"], rtol=1e-9)


def test_known_ahead_missing_names_every_shard(models, two_keys):
    """A known-ahead column missing in two shards: one error with the local one's message."""
    model = models["two"]
    f = two_keys.future
    origin = model.next_origin(two_keys)
    drop = f[ID].isin(["1/1", "2/6"]) & (f[DATE] >= origin + pd.Timedelta(weeks=2))
    data = replace(
        two_keys,
        future=f.assign(fuel_price=f["fuel_price"].where(~drop)),
        known_ahead=["fuel_price"],
    )
    with pytest.raises(KnownAheadMissing) as local:
        score_series(model, data)
    with pytest.raises(KnownAheadMissing) as sharded:
        score_in_shards(model, data, 6)
    assert str(sharded.value) == str(local.value)
    assert "for 2 series on 6 target dates" in str(local.value)


def test_shard_data_keeps_only_its_series(two_keys):
    """shard_data cuts history and future to the ids given."""
    part = shard_data(two_keys, ["1/1", "2/1"])
    assert set(part.history[ID]) == set(part.future[ID]) == {"1/1", "2/1"}


def test_ragged_panel(models, two_keys):
    """A department whose series start later: its shard's grid still spans the panel's
    dates and the forecasts are equal."""
    h = two_keys.history
    late = h["dept"].eq(1) & (h[DATE] < h[DATE].min() + pd.Timedelta(weeks=20))
    data = replace(two_keys, history=h[~late].reset_index(drop=True))
    local, _ = score_series(models["two"], data)
    got, notes = score_in_shards(models["two"], data, 3)
    assert notes.n_shards == 6
    np.testing.assert_allclose(_sorted(got)["forecast"], _sorted(local)["forecast"], rtol=1e-9)


def test_one_key_shards_need_no_reduce(models, one_key):
    """Without group features each shard forecasts alone (the Dask flow's one-key path)."""
    from salesflow.modelling.scoring import forecast_shard, plan_scoring, shard_features

    model = models["one"]
    plan = plan_scoring(model, one_key, 7, None)
    parts = [shard_features(model, d, plan.origin, plan.holidays, plan.start) for d in plan.shards]
    assert all(p.summary.sums == {} for p in parts)
    got = pd.concat([forecast_shard(model, p) for p in parts], ignore_index=True)
    local, _ = score_series(model, one_key)
    np.testing.assert_allclose(_sorted(got)["forecast"], _sorted(local)["forecast"], rtol=1e-9)


def test_rows_per_store_merged(models, two_keys):
    """The run artifact's rows per store from every shard equal those of all rows."""
    from salesflow.modelling.scoring import merge_rows_per_store, rows_per_store, warehouse_rows

    pred, _ = score_series(models["two"], two_keys)
    rows = warehouse_rows(pred, ["store", "dept"], "m", "1", "run", None)
    parts = [rows[rows["dept"] == d] for d in sorted(rows["dept"].unique())]
    assert merge_rows_per_store([rows_per_store(p) for p in parts]) == rows_per_store(rows)
