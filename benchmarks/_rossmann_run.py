"""Running the Rossmann benchmark: each method x origin in a process of its own, then the
scores into ``results["accuracy"]["rossmann"]`` (called by ``run_all.py --rossmann``).

``python benchmarks/_rossmann_run.py TASK ARGS OUT`` is the worker (like ``_worker.py``):
it runs ``TASKS[TASK](**json.loads(ARGS))`` and writes the result with its peak RSS to OUT.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling _modules, when run as the worker

import _rossmann as ros  # noqa: E402

WORK = HERE / "out" / "rossmann"
STEPS = ["baselines", "mlforecast_lgbm", "statsforecast_mstl", "salesflow"]
LIMIT_S = {"baselines": 300, "mlforecast_lgbm": 900, "statsforecast_mstl": 1200, "salesflow": 2700}


# --- tasks (one process each) ---------------------------------------------------------------


def task_baselines(work: str, origin: str) -> dict[str, Any]:
    """The three baselines from ``origin``; one cached frame each."""
    panel = pd.read_parquet(Path(work) / "panel.parquet")
    hist, target = ros.history(panel, origin), ros.window(panel, origin)
    timing = {}
    for name, func in ros.BASELINE_FUNCS.items():
        t0 = time.perf_counter()
        fc = ros.closed_to_zero(target, func(hist, target).to_numpy(dtype=float))
        timing[name] = round(time.perf_counter() - t0, 2)
        out = target[["Store", "Date"]].assign(forecast=fc)
        out.to_parquet(ros.frame_path(work, name, origin))
    return {"fit_s": timing}


def task_method(work: str, method: str, origin: str, **kwargs: Any) -> dict[str, Any]:
    """One peer or salesflow from ``origin`` (``_rossmann_peers.FORECASTERS[method]``);
    closed days set to 0 and everything clipped at 0 here, for every method alike."""
    import _rossmann_peers

    panel = pd.read_parquet(Path(work) / "panel.parquet")
    stores = pd.read_parquet(Path(work) / "stores.parquet")
    target = ros.window(panel, origin)
    pred, info = _rossmann_peers.FORECASTERS[method](panel, stores, origin, **kwargs)
    out = target[["Store", "Date", "Open"]].merge(pred, on=["Store", "Date"], how="left")
    info["missing_forecasts"] = int(out.loc[out["Open"] == 1, "forecast"].isna().sum())
    for col in [c for c in out.columns if c == "forecast" or c[:3] in ("lo_", "hi_")]:
        out[col] = ros.closed_to_zero(out, out[col].to_numpy(dtype=float))
    out.drop(columns="Open").to_parquet(ros.frame_path(work, method, origin))
    return info


TASKS = {"baselines": task_baselines, "method": task_method}


def measure(task: str, args: dict[str, Any], work: Path, limit: float, label: str) -> dict:
    """``_common.run_measured`` for this module's tasks: ``TASKS[task](**args)`` in a fresh
    process of its own session, killed with its group after ``limit`` s; the result has
    ``wall_s`` and the process's peak RSS, or ``skipped`` with the reason."""
    from _common import run_measured

    return run_measured(task, args, work, limit, label, "_rossmann_run.py", "rossmann")


# --- orchestration --------------------------------------------------------------------------


def _step_args(
    step: str, origin: str, folder: Path, salesflow: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    base = {"work": str(WORK), "origin": origin}
    if step == "baselines":
        return "baselines", base
    if step == "salesflow":
        return "method", {**base, "method": step, "data_path": str(folder), **salesflow}
    return "method", {**base, "method": step}


def run(
    folder: Path,
    only: list[str],
    salesflow: dict[str, Any],
    latest: Callable[[], dict[str, Any]],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Prepare the panel, run the ``only`` steps per origin (caching their forecasts), then
    score every method's cached forecasts into ``latest()`` -- the results as they are at
    the end (another run may have written some meanwhile) -- and return it.

    ``salesflow``: ``env`` and ``intervals`` of ``_rossmann_peers.forecast_salesflow``.
    Updates ``accuracy.rossmann``, ``accuracy.rossmann_meta`` (``meta`` plus the data and
    protocol) and ``speed.rossmann`` (per step and origin; steps not rerun keep theirs)."""
    start = time.perf_counter()
    meta["data"] = ros.prepare(folder, WORK)
    steps = [s for s in STEPS if s in only]
    fresh: dict[str, dict[str, Any]] = {}
    for step in steps:
        fresh[step] = {}
        for origin in ros.ORIGINS:
            task, args = _step_args(step, origin, folder, salesflow)
            fresh[step][origin] = measure(task, args, WORK, LIMIT_S[step], f"{step}-{origin}")
    r = latest()
    r.setdefault("speed", {}).setdefault("rossmann", {}).update(fresh)
    before = r.setdefault("accuracy", {}).get("rossmann_meta", {})
    code_by_step = {**before.get("code_by_step", {}), **{s: meta["code"] for s in steps}}
    if "salesflow" not in only:  # its forecasts are the cached ones: keep how they were made
        salesflow = before.get("salesflow", salesflow)
    scores = ros.score_all(WORK, ros.ORIGINS)
    r["accuracy"]["rossmann"] = scores.pop("methods")
    r["accuracy"]["rossmann_meta"] = {
        **meta,
        **scores,
        "path": str(folder),
        "origins": ros.ORIGINS,
        "horizon": ros.HORIZON,
        "holiday_weight": ros.HOLIDAY_WEIGHT,
        "tuning_origin": ros.TUNING_ORIGIN,
        "salesflow": salesflow,
        "steps_run": steps,
        "code_by_step": code_by_step,
        "total_s": round(time.perf_counter() - start, 1),
    }
    return r


def main(argv: list[str]) -> None:
    """The worker: ``TASK ARGS OUT`` (see :func:`measure`)."""
    from _common import peak_rss_mb, write_json

    name, args, out = argv[0], json.loads(argv[1]), Path(argv[2])
    write_json(out, {**TASKS[name](**args), **peak_rss_mb()})


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main(sys.argv[1:])
