"""PostgreSQL's fast forecast write (lock, delete the replaced rows, COPY into the table)
against the upsert path it replaced: same counts, same rows, same runs rows."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest

from salesflow.storage import sqlstore
from salesflow.storage import warehouse as wh
from tests.pg import PG_URL, drop_table, postgres_or_skip
from tests.test_warehouse import make_forecasts

pytestmark = pytest.mark.postgres


@pytest.fixture()
def tables() -> Iterator[tuple[str, str]]:
    """Two fresh table names on PostgreSQL (fast path, upsert path); dropped after."""
    postgres_or_skip()
    suffix = uuid.uuid4().hex[:10]
    names = (f"fast_{suffix}", f"slow_{suffix}")
    yield names
    for name in names:
        drop_table(PG_URL, name)
        drop_table(PG_URL, f"{name}_runs")


def _write(table: str, frame: pd.DataFrame, **kwargs) -> wh.WriteResult:
    return wh.write_forecasts(PG_URL, frame, table=table, runs_table=f"{table}_runs", **kwargs)


def _rows(table: str) -> pd.DataFrame:
    got = wh.read_forecasts(PG_URL, table=table).drop(columns=["created_at", "forecast_run_id"])
    return got.sort_values(list(wh.FORECAST_KEY)).reset_index(drop=True)


def _counts(r: wh.WriteResult) -> tuple:
    return (r.rows_written, r.rows_inserted, r.rows_updated, r.rows_deleted, r.removed, r.kept)


def _ragged(n_series: int, horizons: list[int], shift: float = 0.0) -> pd.DataFrame:
    """Series of different horizons (several classes of target dates in one partition)."""
    frame = make_forecasts(n_series=n_series, horizon=max(horizons), shift=shift)
    keep = frame["horizon"] <= frame["unique_id"].map(
        {u: horizons[i % len(horizons)] for i, u in enumerate(sorted(frame["unique_id"].unique()))}
    )
    return frame[keep].reset_index(drop=True)


STEPS = [
    ("first write", make_forecasts(n_series=6), {}),
    ("rewrite", make_forecasts(n_series=6, shift=2.0), {}),
    ("shorter", make_forecasts(n_series=6, horizon=2), {}),
    ("partial kept", make_forecasts(n_series=3, horizon=3), {}),
    ("ragged horizons", _ragged(5, [1, 4, 2]), {}),
    ("partial replaced", _ragged(4, [3, 1]), {"replace_origin": True}),
    (
        "two origins, two models",
        pd.concat(
            [
                make_forecasts(n_series=2, origin="2012-11-02"),
                make_forecasts(n_series=3, model="other"),
                make_forecasts(n_series=2, horizon=2),
            ]
        ),
        {},
    ),  # fmt: skip
    ("70 target dates", make_forecasts(n_series=2, horizon=70), {"replace_origin": True}),
    (
        "many origins",
        pd.concat(
            [
                make_forecasts(n_series=2, horizon=2, origin=str(d.date()))
                for d in pd.date_range("2012-01-06", periods=12, freq="7D")
            ]
        ),
        {},
    ),  # fmt: skip
]


def test_fast_path_equals_upsert_path(
    tables: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step of a rerun sequence gives the same WriteResult counts, rows and runs rows
    on the fast path as on the upsert path."""
    fast, slow = tables
    for step, frame, kwargs in STEPS:
        got = _write(fast, frame, **kwargs)
        monkeypatch.setattr(sqlstore, "FAST_REPLACE", False)
        ref = _write(slow, frame, **kwargs)
        monkeypatch.undo()
        assert _counts(got) == _counts(ref), step
        pd.testing.assert_frame_equal(_rows(fast), _rows(slow), obj=step)
    cols = ["rows_written", "rows_added", "rows_replaced", "rows_removed", "series_written"]
    cols += ["series_removed", "series_kept", "removed_series", "kept_series", "n_origins"]
    runs = [wh.read_forecast_runs(PG_URL, table=f"{t}_runs")[cols] for t in tables]
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_fault_after_delete_restores_replaced_rows(
    tables: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault in the COPY, after the old rows were deleted, rolls the delete back too."""
    fast, _ = tables
    _write(fast, make_forecasts(n_series=5))
    before, runs_before = _rows(fast), wh.read_forecast_runs(PG_URL, table=f"{fast}_runs")

    def boom(i: int) -> None:
        if i == 1:
            raise RuntimeError("injected fault after chunk 1")

    monkeypatch.setattr(sqlstore, "_after_chunk", boom)
    with pytest.raises(RuntimeError, match="injected fault"):
        _write(fast, make_forecasts(n_series=2, shift=4.0), replace_origin=True, chunk_rows=3)
    pd.testing.assert_frame_equal(_rows(fast), before)
    pd.testing.assert_frame_equal(wh.read_forecast_runs(PG_URL, table=f"{fast}_runs"), runs_before)


def test_concurrent_writers_of_one_origin(tables: tuple[str, str]) -> None:
    """Writers of the same origin at once queue on its lock: all succeed, one frame's rows
    remain, every run is recorded."""
    fast, _ = tables
    _write(fast, make_forecasts(n_series=1))  # the table exists before the race
    errors: list[BaseException] = []

    def write(shift: float) -> None:
        try:
            _write(fast, make_forecasts(n_series=8, shift=shift), replace_origin=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(float(i),)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    got = _rows(fast)
    assert len(got) == 32 and not got.duplicated(list(wh.FORECAST_KEY)).any()
    shifts = (got["forecast"] - _rows_of(make_forecasts(n_series=8))["forecast"]).round(6)
    assert shifts.nunique() == 1  # all rows come from one writer
    runs = wh.read_forecast_runs(PG_URL, table=f"{fast}_runs")
    assert sorted(runs["rows_added"].tolist()) == [0, 0, 0, 4, 28]


def _rows_of(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(wh.FORECAST_KEY)).reset_index(drop=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: pd.concat([f, f.iloc[[0]]]), r"2 rows share their key"),
        (lambda f: f.assign(forecast=[*f["forecast"][:-1], None]), "'forecast' has 1 null"),
        (lambda f: f.assign(unique_id=[*f["unique_id"][:-1], None]), "'unique_id' has 1 null"),
    ],
    ids=["duplicate-across-chunks", "null-in-last-chunk", "null-key-in-last-chunk"],
)
def test_bad_row_in_a_later_chunk(tables: tuple[str, str], change, message: str) -> None:
    """A bad row past the first chunk (checked while the earlier ones are sent) fails the
    write with the same ValueError as upfront, and leaves the table as it was."""
    fast, _ = tables
    _write(fast, make_forecasts(n_series=2))
    before = _rows(fast)
    with pytest.raises(ValueError, match=message):
        _write(fast, change(make_forecasts(n_series=4, shift=1.0)), chunk_rows=5)
    pd.testing.assert_frame_equal(_rows(fast), before)


def test_existing_table_checks(tables: tuple[str, str]) -> None:
    """A table written before is found ready by one catalog query, in a schema too; one
    that lost its key, or a column, goes through the full check (refused, or migrated)."""
    import sqlalchemy as sa

    fast, _ = tables
    schema = f"s_{fast}"
    engine = sa.create_engine(PG_URL)
    try:
        for _ in range(2):
            wh.write_forecasts(PG_URL, make_forecasts(), table=fast, schema=schema, runs_table=None)
        assert wh.count_rows(PG_URL, fast, schema=schema) == 12
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {schema}.{fast} DROP COLUMN lo_95")
        wh.write_forecasts(PG_URL, make_forecasts(), table=fast, schema=schema, runs_table=None)
        assert wh.read_forecasts(PG_URL, table=fast, schema=schema)["lo_95"].notna().all()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {schema}.{fast} DROP CONSTRAINT {fast}_pkey")
        with pytest.raises(wh.WarehouseSchemaError, match="no primary key or unique constraint"):
            wh.write_forecasts(PG_URL, make_forecasts(), table=fast, schema=schema)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        engine.dispose()
