"""The batch forecast flow under prefect_test_harness: temp MLflow, temp SQLite warehouse."""

from __future__ import annotations

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
    from salesflow.warehouse import read_forecasts

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


def test_no_champion_is_a_clear_failure(harness, tmp_path, monkeypatch):
    """Without a registered champion the flow fails saying to train first; nothing written."""
    from flows.batch_forecast import batch_forecast_flow
    from salesflow.registry import ChampionNotFound

    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path))
    with pytest.raises(ChampionNotFound, match="salesflow train"):
        batch_forecast_flow(env="test")
    assert not (tmp_path / "warehouse.db").exists()


def test_failure_mid_write_leaves_table_unchanged(trained, tmp_path, monkeypatch):
    """A fault injected half-way through the write leaves the earlier rows exactly as they were."""
    from flows.batch_forecast import batch_forecast_flow
    from salesflow import sqlstore

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

    from salesflow.registry import load_forecaster
    from salesflow.scoring import score_series

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
    from salesflow.warehouse import WarehouseUnavailable

    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", "postgresql+psycopg://u:s3cret@127.0.0.1:1/x")
    with pytest.raises(WarehouseUnavailable) as exc:
        batch_forecast_flow(env="test")
    assert "s3cret" not in str(exc.value) and "127.0.0.1:1" in str(exc.value)


def test_unreadable_champion_artifact_fails_before_any_write(trained, tmp_path):
    """A champion whose artifact is gone fails the load step (after its retries); no row."""
    import shutil

    from flows.batch_forecast import batch_forecast_flow
    from salesflow.registry import ChampionUnreadable

    shutil.rmtree(tmp_path / "mlartifacts")
    with pytest.raises(ChampionUnreadable, match="version 1 of 'salesflow-forecaster'.*could not"):
        batch_forecast_flow(env="test")
    assert _rows(tmp_path).empty
