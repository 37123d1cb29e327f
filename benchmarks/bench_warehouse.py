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
import resource
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
from sqlalchemy.pool import NullPool

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


class Clock:
    """Wall time and CPU seconds of this process (all threads) and, when PostgreSQL runs on
    this machine, of its exited backends (the postmaster's reaped children): on a machine
    busy with other work CPU seconds vary far less than wall time."""

    def __init__(self, url: str | None = None) -> None:
        self.postmaster: int | None = None
        if url is not None:
            engine = sa.create_engine(url, poolclass=NullPool)
            try:
                with engine.connect() as conn:
                    backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                status = Path(f"/proc/{backend}/status").read_text()
                self.postmaster = int(
                    next(ln for ln in status.splitlines() if "PPid" in ln).split()[1]
                )
            except (OSError, StopIteration, ValueError):
                self.postmaster = None
            finally:
                engine.dispose()

    def _cpu(self) -> tuple[float, float | None]:
        use = resource.getrusage(resource.RUSAGE_SELF)
        server = None
        if self.postmaster is not None:
            try:
                fields = Path(f"/proc/{self.postmaster}/stat").read_text().rsplit(")", 1)[1].split()
                server = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                server = None
        return use.ru_utime + use.ru_stime, server

    def measure(self, fn: Callable[[], object]) -> dict[str, float | None]:
        """Run ``fn``: wall seconds, client CPU seconds, server CPU seconds (or None)."""
        client0, server0 = self._cpu()
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
        time.sleep(0.3)  # the postmaster reaps the backends the call closed
        client1, server1 = self._cpu()
        server = None if server0 is None or server1 is None else server1 - server0
        return {"wall_s": wall, "client_cpu_s": client1 - client0, "server_cpu_s": server}


def summary(rows: int, runs: list[dict[str, float | None]]) -> dict[str, object]:
    """Every run's wall seconds; medians of wall, client and server CPU; rows/s (wall)."""
    wall = [float(r["wall_s"] or 0.0) for r in runs]
    med = statistics.median(wall)
    out: dict[str, object] = {
        "seconds": [round(w, 4) for w in wall],
        "median_s": round(med, 4),
        "rows_per_s": round(rows / med),
    }
    for key in ("client_cpu_s", "server_cpu_s"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        if vals:
            out[f"median_{key}"] = round(statistics.median(float(v) for v in vals), 3)
    for key in ("stage_s", "commit_s"):
        if all(key in r for r in runs):
            out[f"median_{key}"] = round(statistics.median(float(r[key] or 0.0) for r in runs), 4)
    return out


def shards_of(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """``n`` shards of whole series (contiguous runs of series)."""
    ids = frame["unique_id"].unique()
    groups = np.array_split(ids, n)
    return [frame[frame["unique_id"].isin(set(g))] for g in groups if len(g)]


def staged(clock: Clock, url: str, frame: pd.DataFrame, table: str, n: int) -> dict:
    """Stage ``frame`` in ``n`` shards (one after another), then commit: measured, with
    the wall seconds of the staging and of the commit."""
    stage_id, marks = uuid.uuid4().hex, {}

    def run() -> None:
        start = time.perf_counter()
        for i, part in enumerate(shards_of(frame, n)):
            staging.stage_forecasts(url, part, stage_id, f"shard-{i}", table=table)
        marks["stage_s"] = time.perf_counter() - start
        staging.commit_stage(url, stage_id, table=table)
        marks["commit_s"] = time.perf_counter() - start - marks["stage_s"]

    return clock.measure(run) | marks


def upsert_path(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with the fast PostgreSQL path switched off (the older upsert path)."""

    def run() -> object:
        sqlstore.FAST_REPLACE = False
        try:
            return fn()
        finally:
            sqlstore.FAST_REPLACE = True

    return run


def bench_sqlite(
    frame: pd.DataFrame, rewrite: pd.DataFrame, repeat: int, shards: int
) -> dict[str, object]:
    clock, runs = Clock(), {"first": [], "again": [], "staged": []}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'wh' / 'warehouse.db'}"
            runs["first"].append(clock.measure(lambda url=url: wh.write_forecasts(url, frame)))
            runs["again"].append(clock.measure(lambda url=url: wh.write_forecasts(url, rewrite)))
            runs["staged"].append(staged(clock, url, frame, "staged_forecasts", shards))
    n = len(frame)
    return {
        "first_write": summary(n, runs["first"]),
        "rewrite": summary(n, runs["again"]),
        f"staged_{shards}_shards_first_write": summary(n, runs["staged"]),
    }


def bench_postgres(
    url: str, frame: pd.DataFrame, rewrite: pd.DataFrame, repeat: int, shards: int, upsert: bool
) -> dict[str, object]:
    cases = ["first", "again", "up1", "up2", "st1", "st2", "raw", "keyed"]
    runs: dict[str, list] = {k: [] for k in cases}
    clock = Clock(url)
    engine = sa.create_engine(url, future=True)
    copier = sa.create_engine(url, future=True, poolclass=NullPool)  # its backends exit
    try:
        for _ in range(repeat):
            t = f"bench_forecasts_{uuid.uuid4().hex[:10]}"
            tables = [t, f"{t}_up", f"{t}_st", f"{t}_st_stage", f"{t}_raw", f"{t}_keyed"]

            def write(frame: pd.DataFrame, table: str) -> Callable[[], object]:
                return lambda: wh.write_forecasts(url, frame, table=table)

            try:
                runs["first"].append(clock.measure(write(frame, t)))
                runs["again"].append(clock.measure(write(rewrite, t)))
                if upsert:
                    runs["up1"].append(clock.measure(upsert_path(write(frame, f"{t}_up"))))
                    runs["up2"].append(clock.measure(upsert_path(write(rewrite, f"{t}_up"))))
                runs["st1"].append(staged(clock, url, frame, f"{t}_st", shards))
                runs["st2"].append(staged(clock, url, rewrite, f"{t}_st", shards))
                for case, keyed in (("raw", False), ("keyed", True)):
                    name = f"{t}_{case}"
                    copy = lambda name=name, keyed=keyed: raw_copy_seconds(  # noqa: E731
                        copier, frame, name, keyed=keyed
                    )
                    runs[case].append(clock.measure(copy))
            finally:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(tables)}")
        with engine.connect() as conn:
            server = conn.exec_driver_sql("SHOW server_version").scalar()
    finally:
        engine.dispose()
        copier.dispose()
    n = len(frame)
    out: dict[str, object] = {
        "server_version": server,
        "first_write": summary(n, runs["first"]),
        "rewrite": summary(n, runs["again"]),
        f"staged_{shards}_shards_first_write": summary(n, runs["st1"]),
        f"staged_{shards}_shards_rewrite": summary(n, runs["st2"]),
        "raw_copy_plain_table": summary(n, runs["raw"]),
        "raw_copy_keyed_table": summary(n, runs["keyed"]),
    }
    if upsert:
        out["upsert_path_first_write"] = summary(n, runs["up1"])
        out["upsert_path_rewrite"] = summary(n, runs["up2"])
    out["share_of_raw_copy"] = shares(out)
    return out


def shares(out: dict[str, object]) -> dict[str, float]:
    """rows/s of each case over rows/s of the raw plain COPY: by wall time, and by CPU
    seconds (client + server; less sensitive to a busy machine)."""
    raw = out["raw_copy_plain_table"]
    assert isinstance(raw, dict)
    result = {}
    for name, case in out.items():
        if not isinstance(case, dict) or "median_s" not in case or name.startswith("raw_copy_p"):
            continue
        result[f"{name}_wall"] = round(raw["median_s"] / case["median_s"], 3)
        cpu = [
            c.get("median_client_cpu_s", 0) + c.get("median_server_cpu_s", 0) for c in (raw, case)
        ]
        if "median_server_cpu_s" in case and cpu[1]:
            result[f"{name}_cpu"] = round(cpu[0] / cpu[1], 3)
    return result


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
