"""Training's ingestion on Dask (issue #15): ``compute.ingest: workers`` against ``driver``.

    .venv/bin/python benchmarks/bench_train_ingest.py --series 100000 --ingest workers
    .venv/bin/python benchmarks/bench_train_ingest.py --series 100000 --ingest driver

What changed when training and retraining gained ingestion on the workers: their data is
read, cut into shards and validated by the Dask workers (the ``ingest-partitions``
subflow), then gathered into the flow's process as one panel; with ``driver`` the flow's
process reads and validates the whole panel itself. This times exactly that step, as the
training flow runs it (``flows.ingest_partitions.ingest_validated`` inside a flow, a real
Prefect server, ``compute.engine: dask``, a LocalCluster of ``--workers`` processes x 1
thread), on the synthetic panel of ``bench_flow_scale.py`` (dev settings, ``--parts``
sub-panels: generated on the workers with ``workers``, all in the flow's process with
``driver``). The fit and the backtest that follow are the same in both modes and are not
run. One mode per invocation, so each process's peak is its own.

Measured: the step's wall time (the LocalCluster's start included for ``workers``); per
stage, from the server's task runs; every process's peak RSS (psutil every 0.5 s); the
load average. Results merge into ``benchmarks/train_ingest.json``;
``benchmarks/TRAIN_INGEST.md`` is rebuilt from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_flow_scale import (  # noqa: E402
    Sampler,
    Server,
    _load,
    log,
    machine_line,
    peak_rows,
    peaks_since,
    stage_rows,
    start_run,
    task_run_stages,
)
from bench_scale import shape_of  # noqa: E402

RESULTS = HERE / "train_ingest.json"
REPORT = HERE / "TRAIN_INGEST.md"
WORK = Path("/tmp/train_ingest")


def ingest_once(overrides: dict[str, Any]) -> dict[str, Any]:
    """``ingest_validated`` in a flow, as the training flow calls it: what came back."""
    from prefect import flow

    from flows.ingest_partitions import ingest_validated
    from salesflow.config.settings import load_settings

    settings = load_settings("dev", **overrides)

    @flow(name="train-ingest-bench")
    def ingest() -> dict[str, Any]:
        data = ingest_validated(settings, settings.model.horizon)
        return {"series": data.n_series, "rows": len(data.history)}

    return ingest()


def run(a: argparse.Namespace, command: str) -> dict[str, Any]:
    label = f"train-ingest-{a.series}-{a.periods}w-{a.ingest}" + (f"-{a.tag}" if a.tag else "")
    home, machine, result = start_run(WORK, label, a, command)
    stores, depts = shape_of(a.series)
    overrides = {
        "paths": {"local_dir": str(home / "local")},
        "data": {
            "synthetic": {
                "n_stores": stores, "n_depts": depts, "periods": a.periods, "parts": a.parts,
            }
        },
        "compute": {
            "engine": "dask", "ingest": a.ingest, "address": None, "n_workers": a.workers,
            "threads_per_worker": 1, "memory_limit": a.memory_limit,
            "shard_series": a.shard_series,
        },
    }  # fmt: skip
    result["overrides"] = overrides
    with Sampler() as sampler:
        server = Server(home)
        try:
            result["server_start_s"] = round(server.wait_healthy(), 1)
            os.environ["PREFECT_API_URL"] = server.url
            os.environ["PREFECT_HOME"] = str(home / "prefect-home")
            before = sampler.mark()
            log(f"ingest ({a.ingest}): {stores} stores x {depts} depts x {a.periods} weeks")
            since = dt.datetime.now(dt.UTC)
            t0 = time.perf_counter()
            try:
                result["ingested"] = ingest_once(overrides)
            except BaseException as exc:  # noqa: BLE001 - the figures so far are still wanted
                result["error"] = f"{type(exc).__name__}: {exc}"
                log(f"failed: {result['error']}")
            result["wall_s"] = round(time.perf_counter() - t0, 1)
            result["load_1m_end"] = _load()
            result.update(task_run_stages(since))
            result["peaks_step_mb"] = peaks_since(sampler, before)
        finally:
            server.stop()
    result["loads_max"] = max((x for _, x in sampler.loads), default=None)
    result["settings"] = {
        "series": a.series, "periods": a.periods, "parts": a.parts, "workers": a.workers,
        "memory_limit": a.memory_limit, "shard_series": a.shard_series, "ingest": a.ingest,
        "shape": f"{stores} stores x {depts} departments", "env": "dev",
    }  # fmt: skip
    result["label"] = label
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    data["runs"][label] = {**result, "machine": machine}
    RESULTS.write_text(json.dumps(data, indent=2, default=str) + "\n")
    write_report()
    return result


def write_report() -> None:
    data = json.loads(RESULTS.read_text())
    out = [
        "# Training's ingestion on Dask: `compute.ingest` workers vs driver (issue #15)",
        "",
        "Written by `benchmarks/bench_train_ingest.py` from `benchmarks/train_ingest.json`:",
        "`flows.ingest_partitions.ingest_validated` in a flow, as `train-forecaster` and",
        "`retrain-forecaster` call it, with a real Prefect server and `compute.engine: dask`.",
        "`workers`: the `ingest-partitions` subflow reads, cuts and validates on the workers,",
        "then gathers the validated panel into the flow's process (the driver); `driver`: the",
        "driver reads and validates the whole panel itself. Stage times come from the",
        "server's task runs (sum and max of their durations, first start -> last end); peaks",
        "are each process's RSS polled every 0.5 s during the step.",
        "",
    ]
    for label, r in data["runs"].items():
        s, m = r["settings"], r["machine"]
        got = r.get("ingested") or {}
        out += [f"## {label}", "", f"`{r['command']}`", ""]
        out += [
            f"- {s['series']:,} series ({s['shape']}) x {s['periods']} weeks; {s['parts']} parts;"
            f" ingest {s['ingest']}; {s['workers']} workers x 1 thread, memory_limit"
            f" {s['memory_limit']}; shard_series {s['shard_series']:,}",
            f"- **wall time of the step {r.get('wall_s')} s**"
            + (f" (**failed**: {r['error']})" if r.get("error") else ""),
            f"- panel handed to training: {got.get('series', '-')} series,"
            f" {got.get('rows', '-')} rows",
            f"- load average (1 min) at start {r.get('load_1m_start')}, end"
            f" {r.get('load_1m_end')}, max sampled {r.get('loads_max')}",
            f"- code: commit {r['code']['commit']} (git archive HEAD snapshot)",
            "",
            "| stage | task runs | sum s | max s | first start -> last end s |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        out += stage_rows(r.get("stages"))
        out += ["", "| process | peak RSS during the step |", "| --- | --- |"]
        out += peak_rows(r.get("peaks_step_mb"))
        out += ["", machine_line(m), ""]
    REPORT.write_text("\n".join(out))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=100_000)
    p.add_argument("--periods", type=int, default=60)
    p.add_argument("--parts", type=int, default=8)
    p.add_argument("--ingest", choices=["workers", "driver"], default="workers")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="7GB")
    p.add_argument("--shard-series", type=int, default=20_000)
    p.add_argument("--tag", default="")
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    if a.report_only:
        write_report()
        return
    command = ".venv/bin/python benchmarks/bench_train_ingest.py " + shlex.join(argv)
    r = run(a, command.strip())
    log(f"{r['label']}: {r.get('wall_s')} s, peaks {r.get('peaks_step_mb')}, {r.get('error')}")


if __name__ == "__main__":
    main()
