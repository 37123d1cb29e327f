"""Batch scoring core: series unseen at training, rows shaped for the warehouse."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from salesflow.modelling.scoring import score_series, warehouse_rows
from salesflow.modelling.training import make_forecaster


@pytest.fixture(scope="module")
def model_without_one_series(small_data, small_settings):
    hist = small_data.history
    unseen = sorted(hist["unique_id"].unique())[0]
    fitted = make_forecaster(small_settings).fit(
        replace(small_data, history=hist[hist["unique_id"] != unseen].reset_index(drop=True))
    )
    return fitted, unseen


def test_series_unseen_at_training_are_forecast_and_counted(model_without_one_series, small_data):
    """A series the model never trained on is forecast from its own history and listed."""
    model, unseen = model_without_one_series
    pred, notes = score_series(model, small_data)
    assert notes.unseen_series == [unseen]
    assert pred.loc[pred["unique_id"] == unseen, "forecast"].notna().sum() == model.horizon


def test_warehouse_rows_carry_the_model_version(model_without_one_series, small_data):
    """Every row names the model, its version and run, and the series keys as JSON."""
    model, _ = model_without_one_series
    pred, _ = score_series(model, small_data)
    rows = warehouse_rows(pred, model.keys_, "m", "7", "run-1", "flow-1")
    assert len(rows) == len(pred)
    assert set(rows["model_version"]) == {"7"} and set(rows["mlflow_run_id"]) == {"run-1"}
    first = rows.iloc[0]
    assert json.loads(first["series_keys"]) == {
        "store": int(first["store"]),
        "dept": int(first["dept"]),
    }


def test_scoring_notes_carry_the_fingerprint_of_the_data_scored(
    model_without_one_series, small_data
):
    """The notes name the data scored (for forecast_runs): same data, same fingerprint."""
    from salesflow.modelling.registry import data_fingerprint

    model, unseen = model_without_one_series
    _, notes = score_series(model, small_data)
    assert notes.data_fingerprint == data_fingerprint(small_data)
    assert notes.started_at is not None and notes.started_at.tzinfo is not None
    hist = small_data.history
    fewer = replace(small_data, history=hist[hist["unique_id"] != unseen])
    assert score_series(model, fewer)[1].data_fingerprint != notes.data_fingerprint


def test_fingerprint_adds_up_over_parts_in_any_order(small_data):
    """The print of the rows split into parts (shards on Dask workers) and added up is the
    whole panel's, whatever the rows' order; one changed value or one row less changes it."""
    from salesflow.modelling.registry import combine_prints, data_fingerprint, print_parts

    hist = small_data.history
    whole = data_fingerprint(small_data)
    shuffled = hist.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert data_fingerprint(replace(small_data, history=shuffled)) == whole
    ids = sorted(hist["unique_id"].unique())
    parts = [hist[hist["unique_id"].isin(ids[i::3])] for i in range(3)]
    pieces = [print_parts(replace(small_data, history=p)) for p in parts]
    assert combine_prints(pieces) == whole and combine_prints(pieces[::-1]) == whole
    assert combine_prints(pieces[:2]) != whole
    changed = hist.copy()
    changed.loc[changed.index[5], "y"] += 1.0
    assert data_fingerprint(replace(small_data, history=changed)) != whole
    assert data_fingerprint(replace(small_data, history=hist.iloc[1:])) != whole
