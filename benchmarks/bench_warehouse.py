"""Rows/s of ``write_forecasts`` on SQLite and PostgreSQL against a raw psycopg COPY.

Usage: ``python benchmarks/bench_warehouse.py [--rows N] [--pg-url URL] [--out PATH]
[--repeat R] [--shards S] [--no-upsert]``. Each repeat runs every case once on fresh
tables, cases interleaved so that a busy machine slows them alike; the JSON holds every
run and the medians. PostgreSQL cases: ``write_forecasts`` (first write, rewrite of the
same keys), the older upsert path it replaced (COPY into a temporary table + ``INSERT ...
ON CONFLICT``), the staged path (``S`` shards staged one after another, then one
``commit_stage``), a raw binary COPY into a plain table (the issue's yardstick) and into a
table with the forecasts table's key and index (the floor for any keyed write).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from _common import describe_machine
from _pgcopy import raw_copy_seconds

from salesflow.storage import sqlstore, staging
from salesflow.storage import warehouse as wh

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HORIZON = 39


def make_frame(rows: int, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """``rows`` forecast rows: store/dept series of 39 weekly horizons from one origin."""
    rng = np.random.default_rng(seed)
    series = np.arange(rows) // HORIZON
    horizon = np.arange(rows) % HORIZON + 1
    store, dept = series // 100 + 1, series % 100 + 1
    origin = pd.Timestamp("2012-10-26")
    mid = rng.normal(20_000, 5_000, rows) + shift
    keys = pd.Series([f'{{"store": {s}, "dept": {d}}}' for s, d in zip(store, dept, strict=True)])
    return pd.DataFrame(
        {
            "unique_id": [f"{s}/{d}" for s, d in zip(store, dept, strict=True)],
            "series_keys": keys,
            "store": store.astype(str),
            "dept": dept.astype(str),
            "forecast_origin": origin,
            "target_date": origin + pd.to_timedelta(horizon * 7, unit="D"),
            "horizon": horizon,
            "forecast": mid,
            "lo_80": mid - 1_000,
            "hi_80": mid + 1_000,
            "lo_95": mid - 2_000,
            "hi_95": mid + 2_000,
            "model_name": "salesflow-forecaster",
            "model_version": "7",
            "mlflow_run_id": uuid.uuid4().hex,
            "flow_run_id": str(uuid.uuid4()),
        }
    )


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summary(rows: int, seconds: list[float]) -> dict[str, object]:
    med = statistics.median(seconds)
    return {"seconds": [round(s, 4) for s in seconds], "median_s": round(med, 4),
            "rows_per_s": round(rows / med)}  # fmt: skip


def shards_of(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """``n`` shards of whole series (contiguous runs of series)."""
    ids = frame["unique_id"].unique()
    groups = np.array_split(ids, n)
    return [frame[frame["unique_id"].isin(set(g))] for g in groups if len(g)]


def staged_seconds(url: str, frame: pd.DataFrame, table: str, n: int) -> dict[str, float]:
    """Seconds to stage ``frame`` in ``n`` shards (one after another), then to commit."""
    stage_id = uuid.uuid4().hex
    start = time.perf_counter()
    for i, part in enumerate(shards_of(frame, n)):
        staging.stage_forecasts(url, part, stage_id, f"shard-{i}", table=table)
    staged = time.perf_counter()
    staging.commit_stage(url, stage_id, table=table)
    end = time.perf_counter()
    return {"stage_s": staged - start, "commit_s": end - staged, "total_s": end - start}


def staged_summary(rows: int, runs: list[dict[str, float]]) -> dict[str, object]:
    out = summary(rows, [r["total_s"] for r in runs])
    for part in ("stage_s", "commit_s"):
        out[f"median_{part}"] = round(statistics.median(r[part] for r in runs), 4)
    return out


def upsert_path(fn: Callable[[], object]) -> float:
    """Seconds of ``fn`` with the fast PostgreSQL path switched off (the older upsert)."""
    sqlstore.FAST_REPLACE = False
    try:
        return timed(fn)
    finally:
        sqlstore.FAST_REPLACE = True


def bench_sqlite(
    frame: pd.DataFrame, rewrite: pd.DataFrame, repeat: int, shards: int
) -> dict[str, object]:
    first, again, staged = [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'wh' / 'warehouse.db'}"
            first.append(timed(lambda url=url: wh.write_forecasts(url, frame)))
            again.append(timed(lambda url=url: wh.write_forecasts(url, rewrite)))
            staged.append(staged_seconds(url, frame, "staged_forecasts", shards))
    return {
        "first_write": summary(len(frame), first),
        "rewrite": summary(len(frame), again),
        f"staged_{shards}_shards_first_write": staged_summary(len(frame), staged),
    }


def bench_postgres(
    url: str, frame: pd.DataFrame, rewrite: pd.DataFrame, repeat: int, shards: int, upsert: bool
) -> dict[str, object]:
    runs: dict[str, list] = {k: [] for k in ("first", "again", "up1", "up2", "st1", "st2")}
    runs |= {"raw": [], "keyed": []}
    engine = sa.create_engine(url, future=True)
    try:
        for _ in range(repeat):
            t = f"bench_forecasts_{uuid.uuid4().hex[:10]}"
            tables = [t, f"{t}_up", f"{t}_st", f"{t}_st_stage", f"{t}_raw", f"{t}_keyed"]
            try:
                runs["first"].append(timed(lambda t=t: wh.write_forecasts(url, frame, table=t)))
                runs["again"].append(timed(lambda t=t: wh.write_forecasts(url, rewrite, table=t)))
                if upsert:
                    u = f"{t}_up"
                    runs["up1"].append(
                        upsert_path(lambda u=u: wh.write_forecasts(url, frame, table=u))
                    )
                    runs["up2"].append(
                        upsert_path(lambda u=u: wh.write_forecasts(url, rewrite, table=u))
                    )
                runs["st1"].append(staged_seconds(url, frame, f"{t}_st", shards))
                runs["st2"].append(staged_seconds(url, rewrite, f"{t}_st", shards))
                runs["raw"].append(raw_copy_seconds(engine, frame, f"{t}_raw"))
                runs["keyed"].append(raw_copy_seconds(engine, frame, f"{t}_keyed", keyed=True))
            finally:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(tables)}")
        with engine.connect() as conn:
            server = conn.exec_driver_sql("SHOW server_version").scalar()
    finally:
        engine.dispose()
    n = len(frame)
    out: dict[str, object] = {
        "server_version": server,
        "first_write": summary(n, runs["first"]),
        "rewrite": summary(n, runs["again"]),
        f"staged_{shards}_shards_first_write": staged_summary(n, runs["st1"]),
        f"staged_{shards}_shards_rewrite": staged_summary(n, runs["st2"]),
        "raw_copy_plain_table": summary(n, runs["raw"]),
        "raw_copy_keyed_table": summary(n, runs["keyed"]),
    }
    if upsert:
        out["upsert_path_first_write"] = summary(n, runs["up1"])
        out["upsert_path_rewrite"] = summary(n, runs["up2"])
    raw = statistics.median(runs["raw"])
    keyed = statistics.median(runs["keyed"])
    out["share_of_raw_copy"] = {  # rows/s of the case / rows/s of the raw COPY
        "first_write": round(raw / statistics.median(runs["first"]), 3),
        "rewrite": round(raw / statistics.median(runs["again"]), 3),
        "first_write_vs_keyed_copy": round(keyed / statistics.median(runs["first"]), 3),
    }
    return out


def machine() -> dict[str, object]:
    packages = ["sqlalchemy", "psycopg", "psycopg-binary", "pandas", "numpy"]
    return {**describe_machine(packages), "sqlite": sqlite3.sqlite_version}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3331 * HORIZON)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/warehouse.json"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--no-upsert", action="store_true", help="skip the older upsert path")
    args = parser.parse_args(argv)

    frame = make_frame(args.rows)
    rewrite = frame.assign(forecast=frame["forecast"] + 1.0)
    report: dict[str, object] = {"machine": machine(), "rows": args.rows, "repeat": args.repeat}
    report["sqlite"] = bench_sqlite(frame, rewrite, args.repeat, args.shards)
    try:
        wh.check_connection(args.pg_url)
        report["postgres"] = bench_postgres(
            args.pg_url, frame, rewrite, args.repeat, args.shards, not args.no_upsert
        )
    except wh.WarehouseUnavailable as exc:
        report["postgres"] = {"skipped": str(exc)}
    report["pg_url"] = wh.redact_url(args.pg_url)
    report["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
