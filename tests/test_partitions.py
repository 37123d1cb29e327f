"""Partitions of the source (synthetic parts, a glob of long files), the shuffle to shards
and the merged validation verdict: pure functions, no Prefect, no Dask."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd
import pytest

from salesflow.config.settings import load_settings
from salesflow.data.schema import DATE, ID


def _cfg(**update):
    return load_settings("test").data.synthetic.model_copy(update=update)


def _hash(frame: pd.DataFrame) -> int:
    return int(pd.util.hash_pandas_object(frame, index=False).sum())


def test_one_part_is_todays_panel_byte_for_byte():
    """parts=1 (the default) gives exactly the panel of the generator before parts existed
    (hashes taken from it for the test settings)."""
    from salesflow.data.synthetic import generate_part, generate_sales

    data = generate_sales(_cfg())
    assert _hash(data.history) == 13943011652558567273
    assert _hash(data.future) == 9756541249189869958
    pd.testing.assert_frame_equal(generate_part(_cfg(), 0).history, data.history)


@pytest.mark.parametrize(("n_stores", "parts"), [(3, 3), (5, 2)])
def test_a_part_alone_equals_its_stores_of_the_whole(n_stores, parts):
    """Each part, generated alone, is the whole panel's rows of its stores; stores are
    split in contiguous ranges and every store id appears once."""
    from salesflow.data.synthetic import generate_part, generate_sales, part_stores

    cfg = _cfg(n_stores=n_stores, parts=parts)
    whole = generate_sales(cfg)
    seen: list[int] = []
    for i in range(parts):
        part = generate_part(cfg, i)
        stores = list(part_stores(n_stores, parts, i))
        seen += stores
        assert sorted(part.history["store"].unique()) == stores
        for frame in ("history", "future"):
            mine = getattr(whole, frame)
            mine = mine[mine["store"].isin(stores)].reset_index(drop=True)
            pd.testing.assert_frame_equal(getattr(part, frame), mine)
    assert seen == list(range(1, n_stores + 1))
    assert whole.history[[ID, DATE]].duplicated().sum() == 0


def test_parts_differ_from_one_panel_and_need_enough_stores():
    """parts > 1 draws other series than one panel (own child seeds); more parts than
    stores is refused at load."""
    from salesflow.data.synthetic import generate_sales

    assert _hash(generate_sales(_cfg(parts=3)).history) != _hash(generate_sales(_cfg()).history)
    with pytest.raises(ValueError, match="parts \\(4\\) is more than n_stores \\(3\\)"):
        load_settings("test", data={"synthetic": {"parts": 4}})


def long_rows() -> pd.DataFrame:
    """The test panel's history as a long file's rows (store, dept, date, sales, ...)."""
    from salesflow.config.settings import load_settings
    from salesflow.data.synthetic import generate_sales

    h = generate_sales(load_settings("test").data.synthetic).history
    out = h.drop(columns=["unique_id"]).rename(columns={"ds": "date", "y": "sales"})
    out["date"] = out["date"].dt.strftime("%Y-%m-%d")
    return out


def long_mapping() -> Any:
    """The mapping of :func:`long_rows`' columns (the champion's covariates and statics)."""
    from salesflow.config.settings import LongFormatSection
    from salesflow.data.canonical import WALMART_COVARIATES, WALMART_STATIC

    return LongFormatSection(
        keys=["store", "dept"],
        date="date",
        target="sales",
        holiday="is_holiday",
        covariates=list(WALMART_COVARIATES),
        static=list(WALMART_STATIC),
    )


def _long_files(tmp_path, duplicate: bool = False):
    """The test panel as 3 long CSV files: store 1 up to 2011-06-30, store 1 after it and
    store 2, store 3 (a series spans two files); ``duplicate``: one row in two files."""
    rows = long_rows()
    cut = rows["date"] <= "2011-06-30"
    one = rows["store"] == 1
    files = [rows[one & cut], rows[(one & ~cut) | (rows["store"] == 2)], rows[rows["store"] == 3]]
    if duplicate:
        files[1] = pd.concat([files[1], files[0].iloc[[4]]])
    for i, f in enumerate(files):
        f.to_csv(tmp_path / f"sales_{i}.csv", index=False)
    return str(tmp_path / "sales_*.csv"), long_mapping()


def test_glob_is_one_partition_per_file_and_local_reads_them_all(tmp_path):
    """A glob: the local engine reads every file as one panel; each file is a partition,
    read alone with the same mapping."""
    from salesflow.data.partitions import list_partitions, load_partition
    from salesflow.data.sources import load_sales

    pattern, mapping = _long_files(tmp_path)
    section = load_settings("test", data={"source": "long", "path": pattern}).data
    section = section.model_copy(update={"long": mapping})
    parts = list_partitions(section)
    assert [p.name for p in parts] == ["001-sales_0.csv", "002-sales_1.csv", "003-sales_2.csv"]
    whole = load_sales(section)
    loaded = [load_partition(section, p) for p in parts]
    assert sum(len(p.history) for p in loaded) == len(whole.history)
    assert whole.n_series == 12 and loaded[1].n_series == 8


def test_shards_assembled_from_partitions_equal_the_panels_shards(tmp_path):
    """Index -> plan -> split -> assemble gives each shard the whole panel's rows of its
    series (a series from two files sorted by date), cut at as_of like the panel."""
    from salesflow.compute.shards import shard_data
    from salesflow.compute.shuffle import (
        assemble_shard,
        index_partition,
        split_partition,
    )
    from salesflow.data.partitions import list_partitions, load_partition
    from salesflow.data.sources import load_sales

    pattern, mapping = _long_files(tmp_path)
    as_of = pd.Timestamp("2012-01-06").date()
    section = load_settings("test", data={"source": "long", "path": pattern, "as_of": as_of}).data
    section = section.model_copy(update={"long": mapping})
    parts = [load_partition(section, p) for p in list_partitions(section)]
    plan = _plan([index_partition(d, str(i), as_of) for i, d in enumerate(parts)], as_of)
    assert plan.holders == [[0, 1, 2]] * 4  # a department of every store; store 1 in two files
    whole = load_sales(section)
    pieces = [split_partition(d, a) for d, a in zip(parts, plan.assign, strict=True)]
    for s, holders in enumerate(plan.holders):
        shard = assemble_shard([pieces[p][s] for p in holders], plan.raw_last, as_of)
        expected = shard_data(whole, sorted(shard.history[ID].unique()))
        pd.testing.assert_frame_equal(shard.history, expected.history)
        pd.testing.assert_frame_equal(shard.future, expected.future)
    assert plan.origin == whole.last_date + pd.Timedelta(days=7)


def test_duplicate_across_files_fails_the_merged_verdict(tmp_path):
    """A (series, date) row in two files comes together in its shard: the merged report
    fails 'unique (series, date)' naming the columns and the row."""
    from salesflow.compute.shuffle import (
        assemble_shard,
        check_shard,
        index_partition,
        split_partition,
    )
    from salesflow.data.partitions import list_partitions, load_partition
    from salesflow.data.validation_merge import merge_reports
    from salesflow.data.validation_report import DataValidationError

    pattern, mapping = _long_files(tmp_path, duplicate=True)
    section = load_settings("test", data={"source": "long", "path": pattern}).data
    section = section.model_copy(update={"long": mapping})
    parts = [load_partition(section, p) for p in list_partitions(section)]
    plan = _plan([index_partition(d, "p", None) for d in parts])
    pieces = [split_partition(d, a) for d, a in zip(parts, plan.assign, strict=True)]
    cfg = load_settings("test").validation
    checks = [
        check_shard(assemble_shard([pieces[p][s] for p in h], plan.raw_last, None), cfg, None, 8,
                    plan.origin)
        for s, h in enumerate(plan.holders)
    ]  # fmt: skip
    report = merge_reports([c.report for c in checks], cfg.sample_rows)
    assert not report.passed and report.n_series == 12
    message = str(DataValidationError(report))
    assert "unique (series, date): unique_id, ds: 2 rows" in message
    dup = pd.read_csv(tmp_path / "sales_0.csv").iloc[4]
    assert f"{dup['store']}/{dup['dept']}" in message and str(dup["date"]) in message


def _plan(indexes, as_of=None):
    """Shards of one department (3 series) planned from ``indexes``."""
    from salesflow.compute.shuffle import panel_skeleton, plan_shuffle

    return plan_shuffle(indexes, panel_skeleton(indexes), None, 3, None, as_of)


def _result(name, success, unexpected, checked, mostly=None, sample=()):
    from salesflow.data.validation_report import CheckResult

    return CheckResult(
        name, "expect_column_values_to_be_between", "x", success, unexpected,
        100.0 * unexpected / checked, list(sample), checked=checked, mostly=mostly,
    )  # fmt: skip


def _report(*checks):
    from salesflow.data.validation_report import ValidationReport

    return ValidationReport(all(c.success for c in checks), list(checks), 10, 2)


def test_merged_mostly_check_judges_the_share_of_the_whole_panel():
    """A share checked with ``mostly`` is judged over every shard: one shard over the
    limit and the panel under it passes; the panel over it fails, with the examples."""
    from salesflow.data.validation_merge import merge_reports

    over_in_one = merge_reports(
        [_report(_result("m", False, 2, 10, 0.9)), _report(_result("m", True, 0, 30, 0.9))]
    )
    assert over_in_one.passed and over_in_one.checks[0].unexpected_count == 2
    assert over_in_one.checks[0].unexpected_percent == pytest.approx(5.0)
    row = {"unique_id": "1/1", "ds": "2010-02-05"}
    merged = merge_reports(
        [_report(_result("m", False, 2, 10, 0.95, [row])), _report(_result("m", True, 0, 10, 0.95))]
    )
    assert not merged.passed and merged.checks[0].unexpected_percent == pytest.approx(10.0)
    assert merged.checks[0].sample == [row]


def test_merged_row_check_fails_when_one_shard_fails():
    """A per-row check fails when any shard fails it; counts add up, samples are kept."""
    from salesflow.data.validation_merge import merge_reports

    row = {"unique_id": "2/1", "ds": "2010-02-05", "value": -1}
    merged = merge_reports(
        [_report(_result("r", True, 0, 10)), _report(_result("r", False, 1, 10, sample=[row]))]
    )
    assert not merged.passed and merged.n_rows == 20 and merged.n_series == 4
    assert merged.checks[0].unexpected_count == 1 and merged.checks[0].sample == [row]


def test_future_file_rows_start_after_the_panels_last_date(tmp_path):
    """With a future file, a partition ending early (departments 3-4 stop 10 weeks before
    the others) gets future rows from its own last date on; its shards keep only those
    after the panel's last date, once, as the whole panel does."""
    from salesflow.compute.shards import shard_data
    from salesflow.compute.shuffle import (
        assemble_shard,
        index_partition,
        split_partition,
    )
    from salesflow.data.partitions import list_partitions, load_partition
    from salesflow.data.sources import load_sales

    rows = long_rows()
    late = rows["dept"] >= 3
    last = rows["date"].max()
    early = rows["date"] <= "2011-06-30"
    stop = sorted(rows["date"].unique())[-11]
    files = [
        rows[~late & early],
        rows[~late & ~early],
        rows[late & (rows["date"] <= stop)],
    ]
    for i, f in enumerate(files):
        f.to_csv(tmp_path / f"sales_{i}.csv", index=False)
    future = rows[rows["date"] > stop].drop(columns="sales")
    future = pd.concat([future, future[future["date"] == last].assign(date="2012-12-28")])
    future.to_csv(tmp_path / "future.csv", index=False)
    mapping = long_mapping().model_copy(update={"future_path": str(tmp_path / "future.csv")})
    section = load_settings("test", data={"source": "long", "path": str(tmp_path / "s*.csv")})
    section = section.data.model_copy(update={"long": mapping})
    whole = load_sales(section)
    assert len(whole.future) == 12  # one date after the panel's last, every series
    parts = [load_partition(section, p) for p in list_partitions(section)]
    assert len(parts[2].future) > 2 * 10  # from its own last date on
    plan = _plan([index_partition(d, "p", None) for d in parts])
    assert plan.holders[2:] == [[2], [2]]
    pieces = [split_partition(d, a) for d, a in zip(parts, plan.assign, strict=True)]
    for s, holders in enumerate(plan.holders):
        shard = assemble_shard([pieces[p][s] for p in holders], plan.raw_last, None)
        expected = shard_data(whole, sorted(shard.history[ID].unique()))
        pd.testing.assert_frame_equal(shard.history, expected.history)
        pd.testing.assert_frame_equal(shard.future, expected.future)


def test_holiday_flags_from_shards_equal_the_panels():
    """The shards' holiday partials combine into the whole panel's flags, also on target
    dates some series lack (the calendar fills them)."""
    from salesflow.compute.shards import series_shards, shard_data
    from salesflow.data.synthetic import generate_sales
    from salesflow.modelling.holidays import combine_holidays, holiday_partial, panel_holidays

    data = generate_sales(_cfg()).as_of(pd.Timestamp("2011-12-02"))
    some = data.future[~data.future[ID].isin(["1/1", "2/3"])]
    data = replace(data, future=some.reset_index(drop=True))
    origin = data.last_date + pd.Timedelta(days=7)
    whole = panel_holidays(data, origin, 8)
    parts = [
        holiday_partial(shard_data(data, ids), origin, 8) for ids in series_shards(data, None, 3)
    ]
    pd.testing.assert_series_equal(combine_holidays(parts, origin, 8, data.freq), whole)


def test_a_missing_date_in_one_file_fails_the_merged_verdict(tmp_path):
    """A row without a date in the third file reaches its shard and fails 'not null' on
    ``ds``, naming the series; the other shards pass."""
    from salesflow.compute.shuffle import (
        assemble_shard,
        check_shard,
        index_partition,
        split_partition,
    )
    from salesflow.data.partitions import list_partitions, load_partition
    from salesflow.data.validation_merge import merge_reports
    from salesflow.data.validation_report import DataValidationError

    pattern, mapping = _long_files(tmp_path)
    third = pd.read_csv(tmp_path / "sales_2.csv")
    third.loc[3, "date"] = None
    third.to_csv(tmp_path / "sales_2.csv", index=False)
    section = load_settings("test", data={"source": "long", "path": pattern}).data
    section = section.model_copy(update={"long": mapping})
    parts = [load_partition(section, p) for p in list_partitions(section)]
    plan = _plan([index_partition(d, "p", None) for d in parts])
    pieces = [split_partition(d, a) for d, a in zip(parts, plan.assign, strict=True)]
    cfg = load_settings("test").validation
    checks = [
        check_shard(
            assemble_shard([pieces[p][s] for p in h], plan.raw_last, None),
            cfg,
            None,
            8,
            plan.origin,
        )
        for s, h in enumerate(plan.holders)
    ]
    assert [c.report.passed for c in checks].count(False) == 1
    message = str(DataValidationError(merge_reports([c.report for c in checks], cfg.sample_rows)))
    assert "not null: ds: 1 rows" in message
    assert f"{third.loc[3, 'store']}/{third.loc[3, 'dept']}" in message


def _sql_source(tmp_path, parts: int, query: bool = False) -> Any:
    """The test panel's rows in a SQLite table ``sales``; the sql source reading them."""
    import sqlalchemy as sa

    from salesflow.config.settings import DataSection

    url = f"sqlite:///{tmp_path / 'sales.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        long_rows().to_sql("sales", conn, index=False, if_exists="replace")
    engine.dispose()
    sql = "SELECT * FROM sales WHERE sales IS NOT NULL"
    where = {"query": sql} if query else {"table": "sales"}
    return DataSection(source="sql", url=url, sql_parts=parts, long=long_mapping(), **where)


@pytest.mark.parametrize("query", [False, True])
def test_sql_partitions_are_whole_stores_and_add_up(tmp_path, query):
    """data.sql_parts = 2 over 3 stores: 2 partitions of whole stores (1 | 2, 3 by the
    sorted values), read with WHERE store IN (...), whose rows together are the whole
    source's; more parts than stores: one per store."""
    from salesflow.data.partitions import list_partitions, load_partition
    from salesflow.data.sources import load_sql

    data = _sql_source(tmp_path, 2, query)
    parts = list_partitions(data)
    assert [p.key_values for p in parts] == [(1, 2), (3,)]
    assert parts[0].name == "sql-1-of-2-store-1-to-2"
    read = [load_partition(data, p) for p in parts]
    assert [sorted(r.history["store"].unique()) for r in read] == [[1, 2], [3]]
    whole = load_sql(data.url or "", data.table, data.query, data.long, data.freq)
    got = pd.concat([r.history for r in read]).sort_values(["unique_id", "ds"])
    want = whole.history.sort_values(["unique_id", "ds"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    many = list_partitions(data.model_copy(update={"sql_parts": 10}))
    assert [p.key_values for p in many] == [(1,), (2,), (3,)]


@pytest.mark.postgres
def test_sql_partitions_on_postgres():
    """The same on PostgreSQL, from a query read as a subquery: whole stores that add up."""
    import uuid

    import sqlalchemy as sa

    from salesflow.config.settings import DataSection
    from salesflow.data.partitions import list_partitions, load_partition
    from salesflow.data.sources import load_sql
    from tests.pg import PG_URL, drop_table, postgres_or_skip

    postgres_or_skip()
    table = f"sales_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            long_rows().to_sql(table, conn, index=False)
        query = f"SELECT * FROM {table} WHERE store >= 1"
        data = DataSection(source="sql", url=PG_URL, query=query, sql_parts=2, long=long_mapping())
        parts = list_partitions(data)
        assert [p.key_values for p in parts] == [(1, 2), (3,)]
        got = pd.concat([load_partition(data, p).history for p in parts])
        whole = load_sql(PG_URL, None, query, data.long, data.freq).history
        key = ["unique_id", "ds"]
        pd.testing.assert_frame_equal(
            got.sort_values(key).reset_index(drop=True),
            whole.sort_values(key).reset_index(drop=True),
        )
    finally:
        engine.dispose()
        drop_table(PG_URL, table)
