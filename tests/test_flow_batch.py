"""The batch forecast flow under prefect_test_harness: temp MLflow, temp SQLite warehouse."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def trained(harness, tmp_path, monkeypatch):
    """A temp local dir holding a registered champion."""
    from flows.training import training_flow

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    return training_flow(env="test")


def _rows(tmp_path) -> pd.DataFrame:
    from salesflow.storage.warehouse import read_forecasts

    return read_forecasts(f"sqlite:///{tmp_path}/warehouse.db")


def test_batch_forecast_writes_every_series_once(trained, tmp_path, small_data):
    """Rows = series x horizon, each carrying the champion's version; a re-run replaces."""
    from flows.batch_forecast import batch_forecast_flow

    first = batch_forecast_flow(env="test")
    rows = _rows(tmp_path)
    assert len(rows) == small_data.n_series * 8 == first["rows_written"]
    assert set(rows["model_version"]) == {trained["version"]}
    assert rows["flow_run_id"].notna().all()
    assert (rows["lo_95"] <= rows["forecast"]).all() and (rows["forecast"] <= rows["hi_95"]).all()
    assert rows["forecast_origin"].nunique() == 1
    batch_forecast_flow(env="test")
    again = _rows(tmp_path)
    assert len(again) == len(rows)
    assert again["flow_run_id"].iloc[0] != rows["flow_run_id"].iloc[0]
    runs = _runs(tmp_path)  # rows carry the latest writer; forecast_runs keeps both runs
    assert runs["flow_run_id"].tolist() == [
        rows["flow_run_id"].iloc[0],
        again["flow_run_id"].iloc[0],
    ]
    assert runs["rows_added"].tolist() == [len(rows), 0]
    assert runs["rows_replaced"].tolist() == [0, len(rows)]
    assert (runs["model_version"] == trained["version"]).all() and (runs["env"] == "test").all()
    assert runs["data_fingerprint"].nunique() == 1 and runs["data_fingerprint"].notna().all()


def _runs(tmp_path) -> pd.DataFrame:
    from salesflow.storage.warehouse import read_forecast_runs

    return read_forecast_runs(f"sqlite:///{tmp_path}/warehouse.db")


def test_partial_extract_keeps_other_series_unless_replace_origin(trained, tmp_path, capsys):
    """A forecast from a partial extract (store 1 only) for an origin already written keeps
    the other stores' rows and says so; replace_origin removes them and names them."""
    from flows.batch_forecast import batch_forecast_flow
    from salesflow.commands.cli import main

    store_1 = {"data": {"synthetic": {"n_stores": 1}}}
    full = batch_forecast_flow(env="test")
    before = _rows(tmp_path)
    partial = batch_forecast_flow(env="test", overrides=store_1)
    assert partial["origin"] == full["origin"]
    after = _rows(tmp_path)
    assert len(after) == len(before)
    others = before["store"] != "1"
    kept_ids = sorted(before.loc[others, "unique_id"].unique())
    assert partial["series_kept"] == kept_ids and partial["rows_removed"] == 0
    assert (
        f"{len(kept_ids)} series of this origin not in this run left as they were"
        in (partial["write_summary"])
    )
    keep = after[after["store"] != "1"].reset_index(drop=True)
    pd.testing.assert_frame_equal(keep, before[others].reset_index(drop=True))
    code = main(["forecast", "--env", "test", "--set", json.dumps(store_1), "--replace-origin"])
    assert code == 0
    line = f"{len(kept_ids)} series not in this run removed ({int(others.sum())} rows: "
    assert line in capsys.readouterr().out
    assert set(_rows(tmp_path)["store"]) == {"1"}
    runs = _runs(tmp_path)
    assert runs["series_kept"].tolist() == [0, len(kept_ids), 0]
    assert runs["series_removed"].tolist() == [0, 0, len(kept_ids)]
    assert json.loads(runs["removed_series"].iloc[2]) == kept_ids[:20]


def test_no_champion_is_a_clear_failure(harness, tmp_path, monkeypatch):
    """Without a registered champion the flow fails saying to train first; nothing written."""
    from flows.batch_forecast import batch_forecast_flow
    from salesflow.modelling.registry import ChampionNotFound

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    with pytest.raises(ChampionNotFound, match="salesflow train"):
        batch_forecast_flow(env="test")
    assert not (tmp_path / "warehouse.db").exists()


def test_failure_mid_write_leaves_table_unchanged(trained, tmp_path, monkeypatch):
    """A fault injected half-way through the write leaves the earlier rows exactly as they were."""
    from flows.batch_forecast import batch_forecast_flow
    from salesflow.storage import sqlstore

    batch_forecast_flow(env="test", origin="2012-04-06")
    before = _rows(tmp_path)

    def boom(i):
        raise RuntimeError("injected: disk full")

    monkeypatch.setattr(sqlstore, "_after_chunk", boom)
    monkeypatch.setenv("SALESFLOW_MODEL__HORIZON", "8")
    with pytest.raises(RuntimeError, match="injected"):
        batch_forecast_flow(env="test")
    pd.testing.assert_frame_equal(_rows(tmp_path), before)


def test_missing_future_covariates_fall_back_and_are_counted(trained, small_data):
    """Target dates without covariates use the last known value, and the count is reported."""
    from dataclasses import replace

    from salesflow.modelling.registry import load_forecaster
    from salesflow.modelling.scoring import score_series

    model, _ = load_forecaster(trained_uri(trained), "salesflow-forecaster", "champion")
    data = replace(small_data, future=small_data.future.iloc[0:0])
    pred, notes = score_series(model, data)
    assert notes.covariate_rows_filled == small_data.n_series * model.horizon
    assert "temperature" in notes.covariate_columns_filled
    assert pred["forecast"].notna().all()


def trained_uri(result) -> str:
    import os

    return f"sqlite:///{os.environ['SALESFLOW_PATHS__LOCAL_DIR']}/mlflow.db"


def test_unreachable_warehouse_retries_then_fails_clearly(trained, tmp_path, monkeypatch):
    """A closed warehouse port: the write retries, then fails naming the (password-free) URL."""
    from flows.batch_forecast import batch_forecast_flow
    from salesflow.storage.warehouse import WarehouseUnavailable

    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", "postgresql+psycopg://u:s3cret@127.0.0.1:1/x")
    with pytest.raises(WarehouseUnavailable) as exc:
        batch_forecast_flow(env="test")
    assert "s3cret" not in str(exc.value) and "127.0.0.1:1" in str(exc.value)


def test_unreadable_champion_artifact_fails_before_any_write(trained, tmp_path):
    """A champion whose artifact is gone fails the load step (after its retries); no row."""
    import shutil

    from flows.batch_forecast import batch_forecast_flow
    from salesflow.modelling.registry import ChampionUnreadable

    shutil.rmtree(tmp_path / "mlartifacts")
    with pytest.raises(ChampionUnreadable, match="version 1 of 'salesflow-forecaster'.*could not"):
        batch_forecast_flow(env="test")
    assert _rows(tmp_path).empty


def test_a_row_dated_after_today_stops_the_forecast(trained, tmp_path, small_data):
    """One stray row dated 2099 fails the gate (no forecast for 2099); nothing is written."""
    from flows.batch_forecast import batch_forecast_flow
    from salesflow.data.validation import DataValidationError

    h = small_data.history[["store", "dept", "ds", "y", "is_holiday"]]
    stray = h.iloc[[-1]].assign(ds=pd.Timestamp("2099-01-02"))
    path = tmp_path / "sales.csv"
    pd.concat([h, stray]).rename(columns={"ds": "date", "y": "sales"}).to_csv(path, index=False)
    mapping = {"data": {"long": {"holiday": "is_holiday"}}}
    with pytest.raises(DataValidationError, match=r"no dates after today \S+: ds: 1 rows"):
        batch_forecast_flow(env="test", source="long", path=str(path), overrides=mapping)
    assert _rows(tmp_path).empty
