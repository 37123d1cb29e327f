"""Training time on the Walmart and Rossmann data, as users run it and step by step.

Usage: ``python benchmarks/bench_train.py --walmart ../shared/data/walmart_recruiting
[--rossmann ../shared/data/rossmann]`` (either or both).

Measures, one process each: (1) ``salesflow train --source walmart --path ...`` exactly as
the README runs it (a temporary Prefect server, MLflow registration; a fresh local folder):
wall time, peak RSS of the process tree, the backtest table it prints; (2) the same work
without Prefect and MLflow, step by step (``_accuracy.task_train``); (3) one fit on the weeks
before 2012-02-03 and its WMAE against seasonal naive (``_accuracy.task_salesflow_single``).
The mlforecast + LightGBM fit time on that split is read from ``results.json`` (the last
``run_all.py`` run, whose date is given). With ``--rossmann``: ``salesflow train --env
rossmann --path ...`` as the README runs it (goal: 15 min, 4 GB). Writes
``benchmarks/training.json`` and ``benchmarks/TRAINING.md`` with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from _accuracy import HOLIDAY_WEIGHT, prepare_data
from _common import HERE, QUIET_ENV, describe_machine, run_measured, write_json

ORIGIN = "2012-02-03"
PACKAGES = ["salesflow", "xgboost", "pandas", "numpy", "prefect", "mlflow"]
GOALS = {"train_s": 120.0, "fit_vs_mlforecast": 2.0, "ratio_vs_seasonal_naive": 0.80}
ROSSMANN_GOALS = {"train_s": 900.0, "peak_mb": 4096.0}
# Runs a command and prints its process tree's peak RSS (KB): each run's own peak, not the
# maximum over every child this benchmark has started so far.
_TREE_PEAK = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(r.returncode)"
)


def run_tree(
    cmd: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess, float, float]:
    """``cmd`` in a wrapper process: its result, wall seconds, peak RSS (MB) of its tree."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _TREE_PEAK, *cmd], cwd=HERE.parent, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    wall = round(time.perf_counter() - start, 1)
    peak = re.search(r"^PEAK_KB (\d+)$", proc.stderr, re.M)
    return proc, wall, (int(peak[1]) / 1024 if peak else float("nan"))


def measure_cli(walmart: Path, work: Path) -> dict[str, Any]:
    """``salesflow train`` on Walmart in a fresh local folder: wall, peak RSS, its table, and
    how often the temporary Prefect server's SQLite said "database is locked" (Prefect
    issues #10188, #18934: its event recorder then waits out SQLite's 60 s busy timeout)."""
    work.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("salesflow")
    setting = json.dumps({"paths": {"local_dir": str(work / "local")}})
    cmd = [str(exe), "train", "--source", "walmart", "--path", str(walmart), "--set", setting]
    print("[bench_train] salesflow train: started", flush=True)
    proc, wall, peak = run_tree(cmd, {**os.environ, **QUIET_ENV})
    log = proc.stdout + proc.stderr
    (work / "salesflow_train.log").write_text(log)
    if proc.returncode != 0:
        raise SystemExit(f"salesflow train failed (exit {proc.returncode}): see {work}")
    row = re.compile(r"^(\d{4}-\d\d-\d\d)\s+[\d,.]+\s+[\d,.]+\s+([\d.]+)", re.M)
    origins = {m[1]: float(m[2]) for m in row.finditer(proc.stdout)}
    pooled = re.search(r"^salesflow\s+([\d,.]+)\s+.*?\s([\d.]+)\s+\S+$", proc.stdout, re.M)
    print(f"[bench_train] salesflow train: {wall} s, peak {peak:.0f} MB", flush=True)
    return {
        "command": " ".join(cmd[:5]) + " --set '{paths.local_dir: <temp>}'",
        "wall_s": wall,
        "peak_mb_process_tree": round(peak, 1),
        "prefect_sqlite_locked_errors": log.count("database is locked"),
        "pooled_wmae": float(pooled[1].replace(",", "")) if pooled else None,
        "pooled_vs_seasonal_naive": float(pooled[2]) if pooled else None,
        "vs_seasonal_naive_by_origin": origins,
    }


def measure_rossmann(rossmann: Path, work: Path) -> dict[str, Any]:
    """``salesflow train --env rossmann --path ...`` in a fresh local folder: wall time, its
    own peak RSS (the process tree), the pooled backtest line it prints."""
    work.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("salesflow")
    setting = json.dumps({"paths": {"local_dir": str(work / "local")}})
    cmd = [str(exe), "train", "--env", "rossmann", "--path", str(rossmann), "--set", setting]
    print("[bench_train] salesflow train --env rossmann: started", flush=True)
    proc, wall, peak = run_tree(cmd, {**os.environ, **QUIET_ENV})
    (work / "salesflow_train_rossmann.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"salesflow train --env rossmann failed (exit {proc.returncode}): {work}")
    line = re.search(r"^salesflow\s+([\d,.]+)\s+.*?\s([\d.]+)\s+([\d.]+)$", proc.stdout, re.M)
    print(f"[bench_train] rossmann: {wall} s, peak {peak:.0f} MB", flush=True)
    return {
        "command": " ".join(cmd[:6]) + " --set '{paths.local_dir: <temp>}'",
        "wall_s": wall,
        "peak_mb_process_tree": round(peak, 1),
        "pooled_vs_seasonal_naive": float(line[2]) if line else None,
        "pooled_rmspe": float(line[3]) if line else None,
    }


def render_rossmann(r: dict[str, Any]) -> list[str]:
    ok_t = r["wall_s"] <= ROSSMANN_GOALS["train_s"]
    ok_m = r["peak_mb_process_tree"] <= ROSSMANN_GOALS["peak_mb"]
    yes = {True: "met", False: "**not met**"}
    return [
        "",
        "## Rossmann",
        "",
        "| measurement | figure | goal |",
        "| --- | ---: | --- |",
        f"| `salesflow train --env rossmann` (Prefect, MLflow; 3-origin backtest + final fit) "
        f"| {r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min) | ≤ 15 min: {yes[ok_t]} |",
        f"| its peak RSS (process tree) | {r['peak_mb_process_tree'] / 1024:.2f} GB "
        f"| ≤ 4 GB: {yes[ok_m]} |",
        f"| backtest pooled: vs seasonal naive / RMSPE | {r['pooled_vs_seasonal_naive']} / "
        f"{r['pooled_rmspe']} | |",
        "",
    ]


def single_origin(frame: Path) -> dict[str, float]:
    from salesflow.modelling.metrics import wmae

    f = pd.read_parquet(frame)
    a = wmae(f["y"], f["forecast"], f["is_holiday"], HOLIDAY_WEIGHT)
    b = wmae(f["y"], f["seasonal_naive"], f["is_holiday"], HOLIDAY_WEIGHT)
    return {"wmae": round(a, 1), "seasonal_naive_wmae": round(b, 1), "ratio": round(a / b, 4)}


def mlforecast_reference() -> dict[str, Any]:
    path = HERE / "results.json"
    if not path.exists():
        return {}
    res = json.loads(path.read_text())
    peer = res["accuracy"]["runs"]["peers_single"]["mlforecast_lgbm"]["by_origin"][ORIGIN]
    return {
        "fit_s": round(peer["fit_s"], 1),
        "train_rows": peer["train_rows"],
        "measured": res["machine"]["date"],
        "cpu_model": res["machine"]["cpu_model"],
    }


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Training time",
        "",
        f"Generated by `benchmarks/bench_train.py` on {m['date']}: {m['cores']} cores, "
        f"{m['memory_gb']} GB, {m['cpu_model']}, Python {m['python']}, load "
        f"{m['load_average_1m_at_start']} at start; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v),
    ]
    if "cli" in r:
        lines += render_walmart(r)
    if "rossmann" in r:
        lines += render_rossmann(r["rossmann"])
    return "\n".join(lines)


def render_walmart(r: dict[str, Any]) -> list[str]:
    cli, steps, one, ref = r["cli"], r["steps"], r["single"], r["mlforecast"]
    ratio = one["fit_s"] / ref["fit_s"] if ref else None
    ok = {
        "train": cli["wall_s"] <= GOALS["train_s"],
        "fit": ratio is not None and ratio <= GOALS["fit_vs_mlforecast"],
        "acc": one["ratio"] <= GOALS["ratio_vs_seasonal_naive"],
    }
    yes = {True: "met", False: "**not met**"}
    walls = ", ".join(
        f"{r['wall_s']:.0f} s"
        + (" with a Prefect SQLite lock" if r["prefect_sqlite_locked_errors"] else "")
        for r in cli["runs"]
    )
    step_txt = ", ".join(f"{k} {v:.1f} s" for k, v in steps["step_s"].items())
    return [
        "",
        "## Walmart",
        "",
        "| measurement | figure | goal |",
        "| --- | ---: | --- |",
        f"| `salesflow train` on Walmart (Prefect, MLflow; 3-origin backtest + final fit), "
        f"median of {len(cli['runs'])} | {cli['wall_s']:.0f} s (runs: {walls}), peak "
        f"{cli['peak_mb_process_tree'] / 1024:.1f} GB | "
        f"≤ {GOALS['train_s']:.0f} s: {yes[ok['train']]} |",
        f"| the same without Prefect/MLflow | {steps['train_s']:.0f} s ({step_txt}) | |",
        f"| final fit (inside the above, beside the backtest) | {steps['final_fit_s']:.1f} s "
        f"on {steps['train_rows']:,} of {steps['candidate_rows']:,} rows | |",
        f"| one fit on the weeks before {ORIGIN} | {one['fit_s']:.1f} s | |",
        f"| mlforecast + LightGBM fit, same split ({ref.get('measured', '?')[:10]}, "
        f"`run_all.py`) | {ref.get('fit_s', float('nan')):.1f} s | |",
        f"| salesflow fit / mlforecast fit | {ratio:.2f} | ≤ {GOALS['fit_vs_mlforecast']:.0f}: "
        f"{yes[ok['fit']]} |",
        f"| WMAE {ORIGIN}, one fit | {one['wmae']:,.1f} = {one['ratio']:.4f} × seasonal naive "
        f"| ≤ {GOALS['ratio_vs_seasonal_naive']}: {yes[ok['acc']]} |",
        f"| `salesflow train` backtest vs seasonal naive, pooled / per origin | "
        f"{cli['pooled_vs_seasonal_naive']} / "
        + ", ".join(f"{k} {v}" for k, v in cli["vs_seasonal_naive_by_origin"].items())
        + " | |",
        "",
        f"Settings: {json.dumps(steps['settings']['model'])}",
        "",
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walmart", type=Path, help="Walmart Recruiting folder")
    parser.add_argument("--rossmann", type=Path, help="Rossmann folder (configs/rossmann.yaml)")
    parser.add_argument("--repeat", type=int, default=3, help="salesflow train runs (median)")
    parser.add_argument("--out", type=Path, default=HERE / "training.json")
    parser.add_argument("--md", type=Path, default=HERE / "TRAINING.md")
    args = parser.parse_args(argv)
    if not (args.walmart or args.rossmann):
        parser.error("give --walmart, --rossmann or both")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    machine = describe_machine(PACKAGES)
    report: dict[str, Any] = {"machine": machine}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        if args.walmart:
            report.update(walmart_figures(args.walmart.resolve(), args.repeat, work))
        if args.rossmann:
            report["rossmann"] = measure_rossmann(args.rossmann.resolve(), work / "rossmann")
    write_json(args.out, report)
    args.md.write_text(render(report))
    print(render(report))
    return report


def walmart_figures(walmart: Path, repeat: int, work: Path) -> dict[str, Any]:
    """The Walmart measurements: ``salesflow train`` ``repeat`` times (median), the same
    work step by step without Prefect, one fit at ORIGIN, mlforecast's reference."""
    runs = [measure_cli(walmart, work / f"cli{i}") for i in range(repeat)]
    cli = {**sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2], "runs": runs}
    steps = run_measured(
        "train",
        {"walmart": str(walmart), "frame": str(work / "bt.parquet")},
        work,
        3600,
        prefix="bench_train",
    )
    prepare_data(walmart, work / "walmart.pkl")
    frame = work / "single.parquet"
    one = run_measured(
        "salesflow_single",
        {"data": str(work / "walmart.pkl"), "origin": ORIGIN, "frame": str(frame)},
        work,
        3600,
        prefix="bench_train",
    )
    one = {"fit_s": round(one["fit_s"], 1), "peak_mb": one["peak_mb"], **single_origin(frame)}
    return {"cli": cli, "steps": steps, "single": one, "mlforecast": mlforecast_reference()}


if __name__ == "__main__":
    main()
