"""Every salesflow benchmark in one command: accuracy against baselines and peers, speed, scale.

Usage::

    python benchmarks/run_all.py --walmart ../shared/data/walmart_recruiting \\
        [--pg-url URL] [--quick]
    python benchmarks/run_all.py --rossmann ../shared/data/rossmann [--only salesflow]

Writes ``benchmarks/RESULTS.md`` (tables, machine, versions, date, the command) and
``benchmarks/results.json``; ``--quick`` runs the same code on a handful of Walmart series
and small panels in well under two minutes and writes to ``benchmarks/out/quick/`` instead,
so it never overwrites the real results. Intermediate frames, per-step JSON and logs go to
``benchmarks/out/run_all/`` (``out/quick/work/``). Every measurement runs in a process of
its own with a time limit (:func:`_common.run_measured`); one that runs out of time or
fails is recorded as skipped with the reason. Needs the ``bench`` extra (mlforecast,
lightgbm, statsforecast, utilsforecast).

``--rossmann PATH`` runs the daily Rossmann benchmark (``_rossmann.py``) after the Walmart
ones, or alone when ``--walmart`` is not given: then only ``accuracy.rossmann`` (and
``accuracy.rossmann_meta``, ``speed.rossmann``) of the existing results.json change and
RESULTS.md is re-rendered with the Walmart sections as they were. Each method x origin
forecast is cached in ``benchmarks/out/rossmann/``; ``--only salesflow`` refits salesflow
alone and scores it with the other methods' cached forecasts.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _accuracy as acc
import _report
import _rossmann_run
import _scoring
from _common import HERE, QUIET_ENV, describe_machine, run_measured, snapshot_code, write_json

SHIPPED_DRIFT_MAX_ROWS = 200_000  # DriftSection.max_rows's default
QUICK_STORES, QUICK_DEPTS = ["1", "2"], ["1", "2", "3", "4"]
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PACKAGES = [
    "salesflow",
    "xgboost",
    "lightgbm",
    "mlforecast",
    "statsforecast",
    "utilsforecast",
    "coreforecast",
    "prefect",
    "mlflow",
    "evidently",
    "great_expectations",
    "pandas",
    "numpy",
    "scikit-learn",
    "sqlalchemy",
    "psycopg",
]


@dataclass
class Plan:
    """What one run measures, where it writes, and how long each measurement may take."""

    quick: bool
    out: Path
    work: Path
    single_origin: str = "2012-02-03"
    rolling_origins: list[str] = field(
        default_factory=lambda: ["2011-08-05", "2011-11-04", "2012-02-03"]
    )
    # (series, stores, depts, weeks); 100k series get a shorter history to stay in budget.
    sizes: list[tuple[int, int, int, int]] = field(
        default_factory=lambda: [
            (1_000, 10, 100, 143),
            (10_000, 100, 100, 143),
            (100_000, 1_000, 100, 70),
        ]
    )
    model_series: int = 1_000
    drift_rows: int = 1_000_000
    repeat: int = 3
    limit: dict[str, float] = field(
        default_factory=lambda: {
            "salesflow_single": 900,
            "train": 1800,
            "peer": 600,
            "statsforecast_autoets": 420,
            "batch_cycle": 1800,
            "drift": 600,
            "scale_train": 1800,
            "scale_batch": 1500,
            "train_budget_100k": 1200,
        }
    )


def make_plan(quick: bool) -> Plan:
    if not quick:
        return Plan(False, HERE, HERE / "out" / "run_all")
    out = HERE / "out" / "quick"
    return Plan(
        True,
        out,
        out / "work",
        sizes=[(20, 2, 10, 143)],
        model_series=20,
        drift_rows=20_000,
        repeat=1,
        limit={k: 120.0 for k in Plan(False, out, out).limit},
    )


def walmart_subset(src: Path, dst: Path, stores: list[str], depts: list[str]) -> Path:
    """A Walmart-layout folder with only ``stores`` x ``depts`` (the --quick data)."""
    import pandas as pd

    dst.mkdir(parents=True, exist_ok=True)
    for stem in ("train", "features", "stores"):
        path = next(p for p in sorted(src.iterdir()) if p.name.startswith(f"{stem}.csv"))
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        keep = frame["Store"].isin(stores)
        if "Dept" in frame:
            keep &= frame["Dept"].isin(depts)
        frame[keep].to_csv(dst / f"{stem}.csv", index=False)
    return dst


# --- accuracy -------------------------------------------------------------------------------


def run_accuracy(plan: Plan, walmart: Path, data_path: Path, r: dict[str, Any]) -> None:
    """salesflow and the baselines (single origin; the training backtest for the rolling
    origins, also timed as ``speed.train_s``), then every peer; then the scores."""
    w, single, data = plan.work, plan.single_origin, str(data_path)
    sf = run_measured(
        "salesflow_single",
        {"data": data, "origin": single, "frame": str(w / "salesflow_single.parquet")},
        w,
        plan.limit["salesflow_single"],
    )
    peers_single = {}
    for peer in _scoring.SINGLE_PEERS:
        out = str(w / f"peer-{peer}-single.parquet")
        args = {"data": data, "peer": peer, "origins": [single], "out": out}
        limit = plan.limit.get(peer, plan.limit["peer"])
        peers_single[peer] = run_measured("peer", args, w, limit, f"peer-{peer}-single")
    train = run_measured(
        "train",
        {"walmart": str(walmart), "frame": str(w / "salesflow_rolling.parquet")},
        w,
        plan.limit["train"],
    )
    r["speed"]["train"] = train
    r["speed"]["train_s"] = train.get("train_s")
    others = [o for o in plan.rolling_origins if o != single]
    peers_rolling = {}
    for peer in _scoring.ROLLING_PEERS:
        out = str(w / f"peer-{peer}-rolling.parquet")
        args = {"data": data, "peer": peer, "origins": others, "out": out}
        peers_rolling[peer] = run_measured(
            "peer", args, w, plan.limit["peer"], f"peer-{peer}-rolling"
        )
    sales = acc.read_data(data_path)
    a = r["accuracy"]
    # Methods directly under single_origin / rolling (accuracy.single_origin.<method>.wmae).
    meta = _scoring.score_single(w, single, sales, sf, peers_single)
    a["single_origin"], a["single_origin_meta"] = meta.pop("methods"), meta
    meta = _scoring.score_rolling(
        w, plan.rolling_origins, sales, train, peers_single, peers_rolling
    )
    a["rolling"], a["rolling_meta"] = meta.pop("methods"), meta
    if "skipped" not in sf and "skipped" not in train:
        a["single_origin_meta"]["salesflow_reproducible"] = _scoring.reproducible(w)
    a["salesflow_behind"] = _scoring.where_behind(a)
    a["runs"] = {
        "salesflow_single": sf,
        "peers_single": peers_single,
        "peers_rolling": peers_rolling,
    }


# --- speed ----------------------------------------------------------------------------------


def run_speed(plan: Plan, walmart: Path, pg_url: str, r: dict[str, Any]) -> None:
    """The batch cycle and writes (bench_batch_cycle), and the drift check on 1M rows."""
    from salesflow.storage.warehouse import WarehouseUnavailable, check_connection

    s = r["speed"]
    try:
        check_connection(pg_url)
    except WarehouseUnavailable as exc:
        s["batch_cycle"] = s["write"] = {"skipped": f"PostgreSQL unreachable: {exc}"}
    else:
        args = {
            "walmart": str(walmart),
            "pg_url": pg_url,
            "repeat": plan.repeat,
            "out": str(plan.work / "batch_cycle.json"),
            "work_root": str(plan.work / "batch_cycle_registry"),
        }
        bc = run_measured("batch_cycle", args, plan.work, plan.limit["batch_cycle"])
        s["batch_cycle"] = bc
        s["write"] = (
            bc
            if "skipped" in bc
            else {
                "rows_per_s": bc["write_rows_per_s"],
                "copy_rows_per_s": bc["copy_rows_per_s"],
                "write_s": bc["write_s"],
                "copy_s": bc["copy_s"],
                "write_over_copy_ratio": bc["write_over_copy_ratio"],
                "rows": bc["rows"],
                "peak_mb": bc.get("peak_mb"),
            }
        )
    for key, max_rows in (("drift", None), ("drift_full", plan.drift_rows)):
        if key == "drift_full" and plan.drift_rows <= SHIPPED_DRIFT_MAX_ROWS:
            s[key] = {"skipped": "same as the shipped settings: they test every row too"}
            continue
        args = {"rows": plan.drift_rows, "max_rows": max_rows}
        s[key] = run_measured("drift", args, plan.work, plan.limit["drift"], key)
    s["drift_s"] = s["drift"].get("drift_s")
    s["drift_full_s"] = s["drift_full"].get("drift_s")


# --- scale ----------------------------------------------------------------------------------


def _train_projection(plan: Plan, done: dict[str, Any], depts: int, weeks: int, n: int):
    """Seconds the training of ``n`` series would take, from the largest size measured so
    far (training rows per second) and the rows per series of a small panel; None if none."""
    import _scale

    measured = [m["train"] for m in done.values() if "train_s" in m.get("train", {})]
    if not measured:
        return None
    last = max(measured, key=lambda m: m["train_rows"])
    rows = _scale.training_rows_per_series(depts, weeks) * n
    return rows / (last["train_rows"] / last["train_s"]), rows


def run_scale(plan: Plan, pg_url: str | None, r: dict[str, Any]) -> None:
    """Per size: the batch cycle, then training unless projected over the budget."""
    out: dict[str, Any] = {}
    for n, stores, depts, weeks in plan.sizes:
        shape = {"n_stores": stores, "n_depts": depts, "periods": weeks}
        batch = run_measured(
            "scale_batch",
            {**shape, "pg_url": pg_url, "model_series": min(plan.model_series, n)},
            plan.work,
            plan.limit["scale_batch"],
            f"scale-{n}-batch",
        )
        entry: dict[str, Any] = {"periods": weeks, "batch": batch}
        budget = plan.limit["train_budget_100k"]
        projection = _train_projection(plan, out, depts, weeks, n) if n >= 100_000 else None
        if projection and projection[0] > budget:
            entry["train"] = {
                "skipped": f"projected {projection[0]:,.0f} s for ~{projection[1]:,.0f} training "
                f"rows (at the rows/s of the largest size measured) > the {budget:.0f} s budget"
            }
        else:
            limit = budget * 1.5 if n >= 100_000 else plan.limit["scale_train"]
            entry["train"] = run_measured(
                "scale_train", shape, plan.work, limit, f"scale-{n}-train"
            )
        out[str(n)] = summarize_size(entry, n, weeks)
        r["scale"] = out
    r["scale_protocol"] = (
        "Synthetic panels (salesflow.synthetic, seed 42, 9 covariates, ~15 % of series start "
        "late). *batch s*: validate -> drop short series -> forecast every series 39 weeks -> "
        "warehouse rows -> write_forecasts "
        f"({'PostgreSQL' if pg_url else 'SQLite'}, fresh table), with a model fitted beforehand "
        f"(untimed) on the panel's first {plan.model_series:,} series; generating the panel "
        "is not counted. *train s*: features + fit with the shipped dev settings on the whole "
        "panel (no backtest). Each in a process of its own."
    )


def summarize_size(entry: dict[str, Any], n: int, weeks: int) -> dict[str, Any]:
    b, t = entry["batch"], entry["train"]
    peaks = [x.get("peak_mb") for x in (b, t) if x.get("peak_mb") is not None]
    notes = [f"{k}: {x['skipped']}" for k, x in (("batch", b), ("train", t)) if "skipped" in x]
    if weeks < 143:
        notes.insert(0, f"shorter history ({weeks} weeks) to fit the time budget")
    return {
        "batch_s": b.get("batch_s"),
        "train_s": t.get("train_s"),
        "peak_mb": max(peaks) if peaks else None,
        "batch_peak_mb": b.get("peak_mb"),
        "train_peak_mb": t.get("peak_mb"),
        "periods": weeks,
        "history_rows": b.get("history_rows") or t.get("history_rows"),
        "train_rows": t.get("train_rows"),
        "note": "; ".join(notes),
        **entry,
    }


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walmart", type=Path, help="Walmart Recruiting folder")
    parser.add_argument("--rossmann", type=Path, help="Rossmann folder (the daily benchmark)")
    parser.add_argument(
        "--only",
        default=",".join(_rossmann_run.STEPS),
        help=f"Rossmann: comma-separated subset of {','.join(_rossmann_run.STEPS)}",
    )
    parser.add_argument(
        "--salesflow-env", default="rossmann", help="Rossmann: salesflow's config (configs/)"
    )
    parser.add_argument(
        "--salesflow-point-only",
        action="store_true",
        help="Rossmann: salesflow fits once per origin (no backtest, so no intervals/coverage)",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL for the writes")
    parser.add_argument("--quick", action="store_true", help="smoke run into benchmarks/out/quick")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite RESULTS.md from the existing results.json (no measurement)",
    )
    args = parser.parse_args(argv)
    if not (args.walmart or args.rossmann or args.render_only):
        parser.error("give --walmart and/or --rossmann (or --render-only)")
    unknown = set(args.only.split(",")) - set(_rossmann_run.STEPS)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; choose from {_rossmann_run.STEPS}")
    return args


def render_only(plan: Plan) -> dict[str, Any]:
    """RESULTS.md again from results.json (after a change to the report's layout); the
    derived "where salesflow is behind" list is recomputed from the stored scores."""
    import json

    r = json.loads((plan.out / "results.json").read_text())
    if r["accuracy"].get("single_origin"):
        r["accuracy"]["salesflow_behind"] = _scoring.where_behind(r["accuracy"])
    write_json(plan.out / "results.json", r)
    (plan.out / "RESULTS.md").write_text(_report.render(r))
    print(f"[run_all] rendered {plan.out / 'RESULTS.md'} from {plan.out / 'results.json'}")
    return r


def _previous(plan: Plan, command: str, code: dict[str, Any]) -> dict[str, Any]:
    """results.json as it is (a --rossmann run without --walmart changes only its Rossmann
    parts), or a skeleton when there is none yet."""
    import json

    path = plan.out / "results.json"
    if path.exists():
        return json.loads(path.read_text())
    return {"command": command, "quick": plan.quick, "machine": describe_machine(PACKAGES),
            "code": code, "accuracy": {}, "speed": {}, "scale": {}}  # fmt: skip


def _use_snapshot(dest: Path) -> dict[str, Any]:
    """Snapshot the code to ``dest`` and put it first on this process's and every worker's
    path (see :func:`_common.snapshot_code`)."""
    code = snapshot_code(HERE.parent, dest)
    sys.path.insert(0, code["snapshot"])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (code["snapshot"], os.environ.get("PYTHONPATH")) if p
    )
    return code


def main(argv: list[str] | None = None) -> dict[str, Any]:
    os.environ.update(QUIET_ENV)  # before anything loads xgboost / lightgbm, here or below
    args = parse_args(argv)
    plan = make_plan(args.quick)
    if args.render_only:
        return render_only(plan)
    plan.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    snap = plan.work if args.walmart else _rossmann_run.WORK
    code = _use_snapshot(snap / "code")
    command = " ".join(["python", "benchmarks/run_all.py", *map(shlex.quote, sys.argv[1:])])
    command = command if argv is None else f"run_all.main({argv})"
    results, md = plan.out / "results.json", plan.out / "RESULTS.md"
    r = run_walmart(plan, args, code, command, start) if args.walmart else {}
    if args.rossmann:
        meta = {"command": command, "machine": describe_machine(PACKAGES), "code": code}
        only = args.only.split(",")
        sf = {"env": args.salesflow_env, "intervals": not args.salesflow_point_only}
        # Without --walmart: results.json as it is when the Rossmann steps are done.
        latest = (lambda: r) if args.walmart else (lambda: _previous(plan, command, code))
        r = _rossmann_run.run(args.rossmann.resolve(), only, sf, latest, meta)
        write_json(results, r)
        md.write_text(_report.render(r))
    print(f"[run_all] done in {time.perf_counter() - start:.0f} s: {md} and {results}", flush=True)
    return r


def run_walmart(
    plan: Plan, args: argparse.Namespace, code: dict[str, Any], command: str, start: float
) -> dict[str, Any]:
    """Every Walmart benchmark: accuracy, speed, scale; results.json and RESULTS.md are
    rewritten after each part."""
    walmart = args.walmart.resolve()
    if plan.quick:
        walmart = walmart_subset(
            walmart, plan.work / "walmart_subset", ["1", "2"], ["1", "2", "3", "4"]
        )
    r: dict[str, Any] = {
        "command": command,
        "quick": plan.quick,
        "machine": describe_machine(PACKAGES),
        "code": code,
        "protocol": {
            "data": str(walmart),
            "single_origin": plan.single_origin,
            "rolling_origins": plan.rolling_origins,
            "horizon": 39,
            "holiday_weight": acc.HOLIDAY_WEIGHT,
            "metric_code": "salesflow.metrics.score_by",
        },
        "accuracy": {},
        "speed": {},
        "scale": {},
    }
    results, md = plan.out / "results.json", plan.out / "RESULTS.md"

    def save() -> None:
        r["total_s"] = round(time.perf_counter() - start, 1)
        write_json(results, r)
        md.write_text(_report.render(r))

    data_path = plan.work / "data.pkl"
    r["data"] = acc.prepare_data(walmart, data_path)
    run_accuracy(plan, walmart, data_path, r)
    save()
    run_speed(plan, walmart, args.pg_url, r)
    save()
    pg = None if "skipped" in r["speed"].get("batch_cycle", {}) else args.pg_url
    run_scale(plan, pg, r)
    save()
    return r


if __name__ == "__main__":
    main()
