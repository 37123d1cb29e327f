"""Staged forecast writes (shards staged, one commit) on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from salesflow.storage import staging
from salesflow.storage import warehouse as wh
from tests.pg import PG_URL, drop_table, postgres_or_skip
from tests.test_warehouse import make_forecasts

VOLATILE = ["created_at", "forecast_run_id"]


@dataclass(frozen=True)
class Target:
    url: str
    table: str
    runs: str
    backend: str

    @property
    def stage(self) -> str:
        return staging.stage_table(self.table).name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path) -> Iterator[Target]:
    suffix = uuid.uuid4().hex[:10]
    table, runs = f"fc_{suffix}", f"runs_{suffix}"
    if request.param == "sqlite":
        yield Target(f"sqlite:///{tmp_path / 'w.db'}", table, runs, "sqlite")
        return
    postgres_or_skip()
    yield Target(PG_URL, table, runs, "postgres")
    for name in (table, f"{table}_stage", runs, f"ref_{suffix}", f"ref_{runs}"):
        drop_table(PG_URL, name)


def _shards(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    ids = sorted(frame["unique_id"].unique())
    return [frame[frame["unique_id"].isin(ids[i::n])] for i in range(n)]


def _commit_in_shards(t: Target, frame: pd.DataFrame, n: int = 3, **kwargs) -> wh.WriteResult:
    stage_id = uuid.uuid4().hex
    for i, part in enumerate(_shards(frame, n)):
        staging.stage_forecasts(t.url, part, stage_id, f"shard-{i}", table=t.table)
    return staging.commit_stage(t.url, stage_id, table=t.table, runs_table=t.runs, **kwargs)


def _rows(url: str, table: str) -> pd.DataFrame:
    got = wh.read_forecasts(url, table=table).drop(columns=VOLATILE)
    return got.sort_values(list(wh.FORECAST_KEY)).reset_index(drop=True)


def _counts(r: wh.WriteResult) -> tuple:
    return (r.rows_written, r.rows_inserted, r.rows_updated, r.rows_deleted, r.removed, r.kept)


def test_commit_equals_one_write_through_reruns(target: Target) -> None:
    """First write, rewrite, shorter rewrite, partial extract with and without
    replace_origin: a staged commit gives write_forecasts' counts, rows and runs rows."""
    ref_table, ref_runs = f"ref_{target.table[3:]}", f"ref_{target.runs}"
    steps = [
        (make_forecasts(n_series=5), {}),
        (make_forecasts(n_series=5, shift=3.0), {}),
        (make_forecasts(n_series=5, horizon=2), {}),
        (make_forecasts(n_series=2, horizon=3), {}),
        (make_forecasts(n_series=3, horizon=3), {"replace_origin": True}),
        (make_forecasts(n_series=2, origin="2012-11-02", model="other"), {}),
    ]
    for frame, kwargs in steps:
        ref = wh.write_forecasts(target.url, frame, table=ref_table, runs_table=ref_runs, **kwargs)
        got = _commit_in_shards(target, frame, **kwargs)
        assert _counts(got) == _counts(ref)
        pd.testing.assert_frame_equal(_rows(target.url, target.table), _rows(target.url, ref_table))
    counted = ["rows_written", "rows_added", "rows_replaced", "rows_removed", "series_written"]
    counted += ["series_removed", "series_kept", "removed_series", "kept_series", "n_origins"]
    runs = wh.read_forecast_runs(target.url, table=target.runs)
    ref_runs_df = wh.read_forecast_runs(target.url, table=ref_runs)
    pd.testing.assert_frame_equal(runs[counted], ref_runs_df[counted])
    assert wh.count_rows(target.url, target.stage) == 0


def test_restaged_shards_never_duplicate(target: Target) -> None:
    """A shard staged two or three times (a retried task) is committed once."""
    frame = make_forecasts(n_series=4)
    first, second = _shards(frame, 2)
    stage_id = "run-1"
    for _ in range(2):
        staging.stage_forecasts(target.url, first, stage_id, "a", table=target.table)
    for shifted in (5.0, 6.0, 0.0):  # the last staging wins
        rows = second.assign(forecast=second["forecast"] + shifted)
        staging.stage_forecasts(target.url, rows, stage_id, "b", table=target.table)
    assert wh.count_rows(target.url, target.stage, stage_id=stage_id) == len(frame)
    result = staging.commit_stage(target.url, stage_id, table=target.table, runs_table=target.runs)
    assert (result.rows_written, result.rows_inserted) == (16, 16)
    got = _rows(target.url, target.table)
    expected = frame.sort_values(list(wh.FORECAST_KEY)).reset_index(drop=True)
    assert got["forecast"].tolist() == pytest.approx(expected["forecast"].tolist())


def test_commit_fault_changes_nothing(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error inside the commit rolls it all back: table, runs and staged rows as before;
    committing again then succeeds."""
    wh.write_forecasts(target.url, make_forecasts(n_series=3), table=target.table,
                       runs_table=target.runs)  # fmt: skip
    before = wh.read_forecasts(target.url, table=target.table)
    stage_id = "run-fault"
    for i, part in enumerate(_shards(make_forecasts(n_series=2, horizon=2, shift=9.0), 2)):
        staging.stage_forecasts(target.url, part, stage_id, str(i), table=target.table)

    def boom() -> None:
        raise RuntimeError("injected fault in commit")

    monkeypatch.setattr(staging, "_after_move", boom)
    with pytest.raises(RuntimeError, match="injected fault"):
        staging.commit_stage(
            target.url, stage_id, table=target.table, runs_table=target.runs, replace_origin=True
        )
    pd.testing.assert_frame_equal(wh.read_forecasts(target.url, table=target.table), before)
    assert wh.count_rows(target.url, target.runs) == 1
    assert wh.count_rows(target.url, target.stage, stage_id=stage_id) == 4
    monkeypatch.undo()
    result = staging.commit_stage(
        target.url, stage_id, table=target.table, runs_table=target.runs, replace_origin=True
    )
    assert (result.rows_updated, result.rows_deleted, result.removed) == (4, 8, {"1/2": 4})
    assert wh.count_rows(target.url, target.table) == 4
    assert wh.count_rows(target.url, target.stage) == 0


def test_two_commits_of_one_origin_equal_one(target: Target) -> None:
    """Committing the same rows twice (a rerun) leaves the table as one commit did."""
    frame = make_forecasts(n_series=4)
    _commit_in_shards(target, frame)
    once = _rows(target.url, target.table)
    again = _commit_in_shards(target, frame, n=2)
    assert _counts(again) == (16, 0, 16, 0, {}, {})
    pd.testing.assert_frame_equal(_rows(target.url, target.table), once)
    assert wh.count_rows(target.url, target.runs) == 2


def test_commit_retried_after_it_committed_reports_that_commit(target: Target) -> None:
    """A commit whose acknowledgement was lost is retried: the stage is empty, the runs
    table names it, so the retry reports the first commit's counts and writes nothing."""
    frame = make_forecasts(n_series=4)
    stage_id = uuid.uuid4().hex
    for i, part in enumerate(_shards(frame, 2)):
        staging.stage_forecasts(target.url, part, stage_id, f"shard-{i}", table=target.table)
    first = staging.commit_stage(target.url, stage_id, table=target.table, runs_table=target.runs)
    once = _rows(target.url, target.table)
    again = staging.commit_stage(target.url, stage_id, table=target.table, runs_table=target.runs)
    assert first.committed_by is None and _counts(first) == (16, 16, 0, 0, {}, {})
    assert _counts(again) == _counts(first) and again.committed_by
    runs = wh.read_forecast_runs(target.url, table=target.runs)
    assert runs["run_id"].tolist() == [again.committed_by]
    assert runs["stage_id"].tolist() == [stage_id]
    assert "by an earlier attempt of this commit" in wh.describe_write(again)
    pd.testing.assert_frame_equal(_rows(target.url, target.table), once)
    never = staging.commit_stage(target.url, "never", table=target.table, runs_table=target.runs)
    assert _counts(never) == (0, 0, 0, 0, {}, {}) and never.committed_by is None


def test_runs_table_from_before_gains_stage_id(target: Target) -> None:
    """A forecast_runs table created before ``stage_id`` existed gains it at the commit."""
    import sqlalchemy as sa

    from salesflow.storage.forecast_runs import forecast_runs_table
    from salesflow.storage.sqlengine import open_engine

    new = forecast_runs_table(target.runs)
    old = sa.Table(
        target.runs,
        sa.MetaData(),
        *(sa.Column(c.name, c.type, nullable=c.nullable) for c in new.c if c.name != "stage_id"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with open_engine(target.url, write=True) as engine:
        old.create(engine)
    _commit_in_shards(target, make_forecasts(n_series=2))
    runs = wh.read_forecast_runs(target.url, table=target.runs)
    assert len(runs) == 1 and runs["stage_id"].notna().all()


def test_same_key_in_two_shards_is_refused(target: Target) -> None:
    """Two shards holding one series fail the commit with a ValueError; nothing written."""
    frame = make_forecasts(n_series=2)
    staging.stage_forecasts(target.url, frame, "dup", "a", table=target.table)
    staging.stage_forecasts(target.url, frame.iloc[:1], "dup", "b", table=target.table)
    with pytest.raises(ValueError, match="same key more than once"):
        staging.commit_stage(target.url, "dup", table=target.table, runs_table=target.runs)
    assert wh.count_rows(target.url, target.table) == 0
    assert wh.count_rows(target.url, target.runs) == 0


def test_empty_stage_and_cleanup(target: Target) -> None:
    """An empty stage commits nothing; drop_stage and drop_stale_stages remove staged rows."""
    empty = staging.commit_stage(target.url, "none", table=target.table, runs_table=target.runs)
    assert _counts(empty) == (0, 0, 0, 0, {}, {})
    assert wh.count_rows(target.url, target.runs) == 0
    for stage_id in ("x", "y"):
        staging.stage_forecasts(target.url, make_forecasts(), stage_id, "0", table=target.table)
    assert staging.drop_stage(target.url, "x", table=target.table) == 12
    assert staging.drop_stale_stages(target.url, dt.timedelta(hours=1), table=target.table) == 0
    assert staging.drop_stale_stages(target.url, dt.timedelta(0), table=target.table) == 12
    assert wh.count_rows(target.url, target.stage) == 0
    with pytest.raises(ValueError, match="stage_id must be a non-empty string"):
        staging.stage_forecasts(target.url, make_forecasts(), "", "0", table=target.table)


def _stage_in_process(url: str, table: str, stage_id: str, shard: int) -> None:
    part = _shards(make_forecasts(n_series=8), 4)[shard]
    for _ in range(2):
        staging.stage_forecasts(url, part, stage_id, f"shard-{shard}", table=table)


def test_concurrent_stagers(target: Target) -> None:
    """Four processes stage their shards (each twice) into one database at once."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    procs = [
        ctx.Process(target=_stage_in_process, args=(target.url, target.table, "par", i))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    result = staging.commit_stage(target.url, "par", table=target.table, runs_table=target.runs)
    assert (result.rows_written, result.rows_inserted) == (32, 32)
    assert wh.count_rows(target.url, target.table) == 32


@pytest.mark.postgres
def test_concurrent_commits_of_one_origin() -> None:
    """Two commits of the same origin at once queue on its lock: both succeed, no duplicates."""
    postgres_or_skip()
    suffix = uuid.uuid4().hex[:10]
    t = Target(PG_URL, f"fc_{suffix}", f"runs_{suffix}", "postgres")
    errors: list[BaseException] = []
    try:
        for i, shift in enumerate((1.0, 2.0)):
            frame = make_forecasts(n_series=6, shift=shift)
            for j, part in enumerate(_shards(frame, 2)):
                staging.stage_forecasts(t.url, part, f"c{i}", str(j), table=t.table)

        def commit(i: int) -> None:
            try:
                staging.commit_stage(t.url, f"c{i}", table=t.table, runs_table=t.runs)
            except BaseException as exc:  # noqa: BLE001 - reported by the assert below
                errors.append(exc)

        threads = [threading.Thread(target=commit, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert errors == []
        assert wh.count_rows(t.url, t.table) == 24
        runs = wh.read_forecast_runs(t.url, table=t.runs)
        assert sorted(runs["rows_added"].tolist()) == [0, 24]
    finally:
        for name in (t.table, t.stage, t.runs):
            drop_table(PG_URL, name)


@pytest.mark.postgres
def test_series_id_too_long_fails_the_commit_as_a_user_error() -> None:
    """A series id the key index cannot hold fails the commit with SeriesIdTooLong; the
    table stays empty and the stage keeps its rows."""
    postgres_or_skip()
    suffix = uuid.uuid4().hex[:10]
    t = Target(PG_URL, f"fc_{suffix}", f"runs_{suffix}", "postgres")
    long_id = "".join(np.random.default_rng(0).choice(list("abcdefghij0123456789"), 8000))
    try:
        frame = make_forecasts(n_series=1).assign(unique_id=long_id)
        staging.stage_forecasts(t.url, frame, "long", "0", table=t.table)
        with pytest.raises(wh.SeriesIdTooLong, match="unique_id has 8,000 bytes"):
            staging.commit_stage(t.url, "long", table=t.table, runs_table=t.runs)
        assert wh.count_rows(t.url, t.table) == 0 and wh.count_rows(t.url, t.runs) == 0
        assert wh.count_rows(t.url, t.stage) == 4
    finally:
        for name in (t.table, t.stage, t.runs):
            drop_table(PG_URL, name)
