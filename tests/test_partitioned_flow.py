"""The batch forecast on Dask with ingestion on the workers (``compute.ingest: workers``),
on a real ``distributed.LocalCluster`` (in-process workers: small and fast) under Prefect's
test server: the same rows as the local engine on synthetic parts and on a glob of long
files with a series in two files; a bad partition stops the run before anything is
staged; the partitions are read by the workers, never by the flow's process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.champions import register_champion
from tests.test_partitions import long_mapping, long_rows

SHARD_SERIES = 3  # the test panel: 4 departments x 3 stores -> 4 shards of one department


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Prefect's test server, a LocalCluster of 2 in-process workers, a champion in a
    registry of this module, and a SQLite warehouse the workers share."""
    from distributed import LocalCluster
    from prefect.testing.utilities import prefect_test_harness

    from salesflow.config.settings import load_settings

    local = tmp_path_factory.mktemp("partitioned")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
        mp.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(local))
        s = load_settings("test")
        champion = register_champion(s)
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        )
        with cluster, prefect_test_harness(server_startup_timeout=120):
            yield {"local": local, "champion": champion, "cluster": cluster, "settings": s}


def _dask(world: dict[str, Any], data: dict[str, Any], ingest: str = "workers") -> dict[str, Any]:
    address = world["cluster"].scheduler_address
    compute = {"engine": "dask", "address": address, "shard_series": SHARD_SERIES}
    return {"compute": {**compute, "ingest": ingest}, "data": data}


def _forecast(overrides: dict[str, Any]) -> dict[str, Any]:
    from flows.batch_forecast import batch_forecast_flow

    return batch_forecast_flow(env="test", overrides=overrides)


def _rows(world: dict[str, Any]) -> pd.DataFrame:
    from salesflow.storage.warehouse import read_forecasts

    rows = read_forecasts(world["settings"].warehouse_url)
    return rows.sort_values(["unique_id", "target_date"]).reset_index(drop=True)


def _same_answers(world: dict[str, Any], data: dict[str, Any], ingest: str = "workers") -> None:
    """The local engine's rows, then the Dask engine's: equal within 1e-6."""
    local = _forecast({"data": data})
    local_rows = _rows(world)
    result = _forecast(_dask(world, data, ingest))
    rows = _rows(world)
    assert result["rows_written"] == local["rows_written"] == len(rows) == len(local_rows)
    assert result["rows_replaced"] == len(rows) and result["series"] == local["series"]
    assert result["model_version"] == local["model_version"] == world["champion"].version
    assert set(rows["model_version"]) == {world["champion"].version}
    keys = ["unique_id", "forecast_origin", "target_date", "horizon"]
    assert rows[keys].equals(local_rows[keys])
    for col in ("forecast", "lo_80", "hi_80", "lo_95", "hi_95"):
        np.testing.assert_allclose(rows[col], local_rows[col], rtol=1e-6)
    from salesflow.storage.warehouse import read_forecast_runs

    prints = read_forecast_runs(world["settings"].warehouse_url)["data_fingerprint"].tail(2)
    prints = prints.tolist()
    assert prints[0] == prints[1] and prints[0], prints  # the same rows, the same print


def test_synthetic_parts_same_answers_as_local(world):
    """data.synthetic.parts = 3: three parts read on the workers, the local engine's rows."""
    _same_answers(world, {"synthetic": {"parts": 3}})


def _subflow_task_names(like: str) -> list[str]:
    """The task runs of the newest subflow run whose name contains ``like``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=like)),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )[0]
        return _task_run_names(client, run.id)


def test_driver_ingest_same_answers_as_local(world):
    """compute.ingest: driver: the flow's process reads the panel and plans the shards,
    each is sent to a worker once (share-shard) for its group sums and its forecast, and
    the rows are the local engine's."""
    _same_answers(world, {"synthetic": {"parts": 1}}, ingest="driver")
    names = _subflow_task_names("score-shards of")
    for step in ("share-shard-", "shard-group-sums-", "forecast-shard-"):
        assert len([n for n in names if n.startswith(step)]) == 4, (step, names)
    assert not [n for n in names if n.startswith("shard-features-")]


def _write_files(folder, duplicate: bool = False) -> dict[str, Any]:
    rows = long_rows()
    cut = rows["date"] <= "2011-06-30"
    one = rows["store"] == 1
    files = [rows[one & cut], rows[(one & ~cut) | (rows["store"] == 2)], rows[rows["store"] == 3]]
    if duplicate:
        files[2] = pd.concat([files[2], files[0].iloc[[6]]])
    folder.mkdir(exist_ok=True)
    for i, f in enumerate(files):
        f.to_csv(folder / f"sales_{i}.csv", index=False)
    mapping = long_mapping().model_dump(exclude_none=True)
    mapping["keys"] = mapping.pop("key_columns")  # read from YAML as ``keys``
    return {"source": "long", "path": str(folder / "sales_*.csv"), "long": mapping}


def test_long_files_same_answers_as_local(world, tmp_path, monkeypatch):
    """A glob of 3 long CSV files, one series in two of them: the local engine's rows; the
    partitions were read by the Dask workers (never the flow's process), and the flow
    only ever held their indexes (no rows)."""
    import distributed

    import tasks.partitions as tp

    # Dask pickles the task's function by value (with its globals): record in a file.
    record = tmp_path / "read_on.txt"
    indexes: list[Any] = []
    load, plan = tp.load_partition, tp.plan_shuffle

    def load_on_worker(section, part):
        address = distributed.get_worker().address  # ValueError outside a worker
        with record.open("a") as f:
            f.write(address + "\n")
        return load(section, part)

    def plan_recorded(found, *args):
        indexes.extend(found)
        return plan(found, *args)

    monkeypatch.setattr(tp, "load_partition", load_on_worker)
    monkeypatch.setattr(tp, "plan_shuffle", plan_recorded)
    _same_answers(world, _write_files(tmp_path / "files"))
    workers = set(world["cluster"].scheduler_info["workers"])
    read_on = record.read_text().split()
    assert len(read_on) == 3 and set(read_on) <= workers  # the local run reads no partition
    assert len(indexes) == 3 and all(ix.template.history.empty for ix in indexes)
    assert sum(len(ix.series) for ix in indexes) == 12 + 4  # store 1's series in two files


def test_bad_partition_stops_before_anything_is_staged(world, tmp_path):
    """A row repeated in two files: the run fails naming the check, columns and row; the
    forecasts table keeps its rows and nothing stays staged."""
    from salesflow.data.validation_report import DataValidationError
    from salesflow.storage import staging
    from salesflow.storage.warehouse import count_rows

    s = world["settings"]
    before = _rows(world)
    with pytest.raises(DataValidationError) as err:
        _forecast(_dask(world, _write_files(tmp_path / "bad", duplicate=True)))
    message = str(err.value)
    dup = pd.read_csv(tmp_path / "bad" / "sales_0.csv").iloc[6]
    assert "unique (series, date): unique_id, ds: 2 rows" in message
    assert f"{dup['store']}/{dup['dept']}" in message and dup["date"] in message
    pd.testing.assert_frame_equal(_rows(world), before)
    stage = staging.stage_table(s.warehouse.table).name
    try:
        assert count_rows(s.warehouse_url, stage) == 0
    except Exception as exc:  # never created: nothing was staged
        assert "no such table" in str(exc).lower()


def test_commit_retried_after_a_lost_acknowledgement(world, monkeypatch):
    """The commit lands but its acknowledgement is lost (a connection reset right after):
    commit-forecasts is retried, finds its stage committed and reports that commit's rows,
    not 0; the table holds them once and forecast_runs one row for the run."""
    import tasks.score_shards as ts
    from salesflow.storage.warehouse import count_rows, read_forecast_runs

    s = world["settings"]
    runs_before = len(read_forecast_runs(s.warehouse_url))
    commit, lost = ts.commit_stage, []

    def commit_then_lose_the_ack(*args, **kwargs):
        result = commit(*args, **kwargs)
        if not lost:
            lost.append(result)
            raise ConnectionResetError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(ts, "commit_stage", commit_then_lose_the_ack)
    monkeypatch.setattr(ts.commit_forecasts, "retry_delay_seconds", 0)
    result = _forecast(_dask(world, {"synthetic": {"parts": 2}}))
    (first,) = lost
    assert first.rows_written > 0 and first.committed_by is None
    assert result["rows_written"] == first.rows_written == len(_rows(world))
    assert result["rows_replaced"] == first.rows_updated
    runs = read_forecast_runs(s.warehouse_url)
    assert len(runs) == runs_before + 1 and runs["stage_id"].iloc[-1]
    stage = staging_table(s)
    assert count_rows(s.warehouse_url, stage) == 0


def staging_table(settings: Any) -> str:
    from salesflow.storage import staging

    return staging.stage_table(settings.warehouse.table).name


def test_sql_parts_same_answers_as_local(world, tmp_path):
    """data.sql_parts = 3 over a SQLite table: three partitions of whole stores, each read
    by a worker (WHERE store IN ...), give the local engine's rows (which read it at once)."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'sales.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        long_rows().to_sql("sales", conn, index=False)
    engine.dispose()
    mapping = long_mapping().model_dump(exclude_none=True)
    mapping["keys"] = mapping.pop("key_columns")
    data = {"source": "sql", "url": url, "table": "sales", "sql_parts": 3, "long": mapping}
    _same_answers(world, data)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="read-partition-sql-"))
        )
    assert sorted(r.name for r in runs) == [
        f"read-partition-sql-{i}-of-3-store-{i}-to-{i}" for i in (1, 2, 3)
    ]


def _ingested(world: dict[str, Any], data: dict[str, Any], dask: bool) -> Any:
    """What training's ingestion hands the fit: on the workers or in this process."""
    from prefect import flow

    from flows.ingest_partitions import ingest_validated
    from salesflow.config.settings import load_settings

    overrides = _dask(world, data) if dask else {"data": data}
    settings = load_settings("test", **overrides)

    @flow(name="ingest-for-test")
    def ingest() -> Any:
        return ingest_validated(settings, settings.model.horizon)

    return ingest()


def _task_run_names(client: Any, run_id: Any) -> list[str]:
    """The task run names of flow run ``run_id`` (filtered by the server: an unfiltered
    read stops at the API's default limit, which this module's runs pass)."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    flt = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]))
    return sorted(t.name for t in client.read_task_runs(task_run_filter=flt))


def test_training_data_read_and_validated_on_the_workers(world, tmp_path):
    """compute.ingest: workers for training: 3 long files (a series in two of them, a
    short series dropped) read, cut and validated on the workers give the same panel the
    flow's process reads and validates itself, with one task run per partition and shard."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from salesflow.config.settings import load_settings
    from salesflow.data.sources import load_sales

    data = _write_files(tmp_path / "train_files")
    rows = pd.read_csv(tmp_path / "train_files" / "sales_2.csv")
    short = rows[rows["dept"] == rows["dept"].max()].tail(3)  # a series of 3 weeks only
    extra = short.assign(store=9)
    pd.concat([rows, extra]).to_csv(tmp_path / "train_files" / "sales_2.csv", index=False)
    local = _ingested(world, data, dask=False)
    raw = load_sales(load_settings("test", data=data).data)
    short_id = f"9/{short['dept'].iloc[0]}"
    assert short_id in set(raw.history["unique_id"])  # read, then dropped as short
    on_workers = _ingested(world, data, dask=True)
    assert short_id not in set(local.history["unique_id"])
    for part in ("history", "future"):
        pd.testing.assert_frame_equal(getattr(on_workers, part), getattr(local, part))
    assert on_workers.static_frame().equals(local.static_frame())
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="ingest-partitions of"))
        )
        names = _task_run_names(client, run.id)
    assert [n for n in names if n.startswith("read-partition-")] == [
        f"read-partition-00{i + 1}-sales_{i}.csv" for i in range(3)
    ]
    shards = [n[len("validate-shard-") :] for n in names if n.startswith("validate-shard-")]
    assert len(shards) == 4 and shards[-1].startswith("003-4-series")  # dept 4 + the short one
    assert [n for n in names if n.startswith("shard-data-")] == [f"shard-data-{x}" for x in shards]
    assert any(n.startswith("validation-verdict") for n in names)


def test_training_flow_on_partitions_read_by_the_workers(world):
    """training_flow with engine dask and 3 synthetic parts: the data is read on the
    workers, the fit runs on the cluster, and a version is registered (the module's
    champion stays champion)."""
    from flows.training import training_flow

    result = training_flow(env="test", overrides=_dask(world, {"synthetic": {"parts": 3}}))
    assert result["version"] != world["champion"].version and result["alias"] is None
    assert result["action"] == "none" and result["origins"]


def test_training_stops_on_a_bad_partition_before_registering(world, tmp_path):
    """A row repeated in two files: training on the workers fails naming the check and the
    row; no version is registered."""
    from mlflow import MlflowClient

    from flows.training import training_flow
    from salesflow.data.validation_report import DataValidationError

    s = world["settings"]
    registry = MlflowClient(s.tracking_uri)
    before = len(registry.search_model_versions(f"name='{s.model.name}'"))
    assert before >= 1  # the module's champion (and versions trained by earlier tests)
    with pytest.raises(DataValidationError) as err:
        training_flow(env="test", overrides=_dask(world, _write_files(tmp_path, duplicate=True)))
    assert "unique (series, date): unique_id, ds: 2 rows" in str(err.value)
    assert len(registry.search_model_versions(f"name='{s.model.name}'")) == before
