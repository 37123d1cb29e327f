"""Rows/s of ``write_forecasts`` on SQLite and PostgreSQL against a raw psycopg COPY.

Usage: ``python benchmarks/bench_warehouse.py [--rows N] [--pg-url URL] [--out PATH]``.
Each case runs ``--repeat`` times on a fresh table; the JSON holds every run and the median.
"""

from __future__ import annotations

import argparse
import json
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


def bench_sqlite(frame: pd.DataFrame, rewrite: pd.DataFrame, repeat: int) -> dict[str, object]:
    first, again = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'wh' / 'warehouse.db'}"
            first.append(timed(lambda url=url: wh.write_forecasts(url, frame)))
            again.append(timed(lambda url=url: wh.write_forecasts(url, rewrite)))
    return {"first_write": summary(len(frame), first), "rewrite": summary(len(frame), again)}


def bench_postgres(
    url: str, frame: pd.DataFrame, rewrite: pd.DataFrame, repeat: int
) -> dict[str, object]:
    first, again, raw = [], [], []
    engine = sa.create_engine(url, future=True)
    try:
        for _ in range(repeat):
            table = f"bench_forecasts_{uuid.uuid4().hex[:10]}"
            try:
                first.append(timed(lambda t=table: wh.write_forecasts(url, frame, table=t)))
                again.append(timed(lambda t=table: wh.write_forecasts(url, rewrite, table=t)))
                raw.append(raw_copy_seconds(engine, frame, table + "_raw"))
            finally:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}, {table}_raw")
        with engine.connect() as conn:
            server = conn.exec_driver_sql("SHOW server_version").scalar()
    finally:
        engine.dispose()
    return {
        "server_version": server,
        "first_write": summary(len(frame), first),
        "rewrite": summary(len(frame), again),
        "raw_copy_plain_table": summary(len(frame), raw),
    }


def machine() -> dict[str, object]:
    packages = ["sqlalchemy", "psycopg", "psycopg-binary", "pandas", "numpy"]
    return {**describe_machine(packages), "sqlite": sqlite3.sqlite_version}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3331 * HORIZON)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/warehouse.json"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    frame = make_frame(args.rows)
    rewrite = frame.assign(forecast=frame["forecast"] + 1.0)
    report: dict[str, object] = {"machine": machine(), "rows": args.rows, "repeat": args.repeat}
    report["sqlite"] = bench_sqlite(frame, rewrite, args.repeat)
    try:
        wh.check_connection(args.pg_url)
        report["postgres"] = bench_postgres(args.pg_url, frame, rewrite, args.repeat)
    except wh.WarehouseUnavailable as exc:
        report["postgres"] = {"skipped": str(exc)}
    report["pg_url"] = wh.redact_url(args.pg_url)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
