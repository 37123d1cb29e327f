"""Scale benchmark (issue #15): batch scoring of 10k..1M synthetic series, local vs Dask.

    .venv/bin/python benchmarks/bench_scale.py --series 10000 --periods 143
    .venv/bin/python benchmarks/bench_scale.py --series 100000 --periods 70
    .venv/bin/python benchmarks/bench_scale.py --million --periods 60

Variants, each in a process of its own (``--variants``):

* ``local``: the batch cycle in one process, as ``compute.engine: local`` runs it:
  generate -> validate + drop short series -> ``score_series`` -> ``warehouse_rows`` ->
  ``write_forecasts`` (one transaction).
* ``dask``: what ``compute.engine: dask`` does with the panel read by the flow's process:
  generate + validate in the driver, ``plan_scoring`` (shards of whole departments),
  shards shipped to a LocalCluster (``--workers`` processes x 1 thread, ``--memory-limit``
  each), ``shard_features`` per shard on the workers, ``reduce_shards`` in the driver,
  ``forecast_shard`` -> rows -> ``stage_forecasts`` per shard on the workers, one
  ``commit_stage`` from the driver.
* ``dask-parts``: the same, but each shard is generated *on its worker* (a separately
  seeded sub-panel of whole departments): what partitioned ingestion would give, since the
  driver never holds the panel. Not what the flow does today.

No Prefect: the library functions the flows' tasks call, timed stage by stage. Peak RSS:
every process's polled peak (psutil, 0.5 s) and each worker's ``VmHWM`` at the end.
Results merge into ``benchmarks/scale.json``; ``benchmarks/SCALE.md`` is rebuilt from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
VARIANTS = ("local", "dask", "dask-parts")
PACKAGES = ["pandas", "numpy", "xgboost", "dask", "distributed", "sqlalchemy", "psycopg"]


def shape_of(series: int) -> tuple[int, int]:
    """(stores, departments): 100 departments up to 100k series, then 1,000 stores."""
    stores = min(1000, max(1, series // 100))
    return stores, series // stores


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _clock(steps: dict[str, float], name: str, t: float) -> float:
    now = time.perf_counter()
    steps[name] = round(now - t, 3)
    print(f"[scale] {name}: {steps[name]:.1f} s", flush=True)
    return now


# --- variants (run in their own process) ---------------------------------------------------


def run_local(a: dict[str, Any]) -> dict[str, Any]:
    import _scale_dask as sd

    from salesflow.modelling.scoring import score_series
    from salesflow.storage.warehouse import write_forecasts

    model, fit_s = sd.load_model(100, a["periods"], a["model_series"], Path(a["cache"]))
    target, steps = sd.Target(a["pg_url"]), {}
    sd.warm_up()
    with sd.PeakSampler() as peaks:
        t = start = time.perf_counter()
        data = sd.make_panel(*shape_of(a["series"]), a["periods"])
        t = _clock(steps, "generate", t)
        data, short = sd.validated(data)
        t = _clock(steps, "validate", t)
        pred, notes = score_series(model, data)
        t = _clock(steps, "features_predict", t)
        rows = sd.rows_of(model, pred)
        t = _clock(steps, "rows", t)
        del pred
        try:
            res = write_forecasts(target.url, rows, table=target.table, runs_table=target.runs)
            t = _clock(steps, "write", t)
        finally:
            target.drop()
        total = time.perf_counter() - start
    return {
        "steps_s": steps,
        "total_s": round(total, 2),
        "batch_s": round(total - steps["generate"], 2),
        "rows_written": res.rows_written,
        "series_forecast": notes.n_series_forecast,
        "short_dropped": len(short),
        "history_rows": len(data.history),
        "model_fit_s_untimed": round(fit_s, 1),
        "peaks_mb": peaks.by_role(),
        "driver_peak_mb": sd.vmhwm_mb(),
    }


def run_dask(a: dict[str, Any], parts: bool) -> dict[str, Any]:
    """The ``score-shards`` subflow's steps, as plain calls on a LocalCluster: pass 1 group
    sums per shard, reduce here, pass 2 features again + forecast + stage per shard, one
    commit here. Shards go to the workers as task arguments (as the flow's task parameters
    do), once per pass; ``parts``: generated on the workers instead."""
    import _scale_dask as sd
    from distributed import Client, LocalCluster, as_completed

    from salesflow.modelling.scoring import panel_holidays, plan_scoring, reduce_shards
    from salesflow.storage.staging import commit_stage

    model, fit_s = sd.load_model(100, a["periods"], a["model_series"], Path(a["cache"]))
    stores, depts = shape_of(a["series"])
    target, steps, out = sd.Target(a["pg_url"]), {}, {}
    stage_id = f"bench-{uuid.uuid4().hex[:8]}"
    with sd.PeakSampler() as peaks:
        t = time.perf_counter()
        cluster = LocalCluster(
            n_workers=a["workers"], threads_per_worker=1, memory_limit=a["memory_limit"],
            processes=True, dashboard_address=None,
        )  # fmt: skip
        client = Client(cluster)
        sd.warm_up()
        client.run(sd.warm_up)
        model_f = client.scatter(model, broadcast=True)
        client.run(lambda: None)
        t = start = _clock(steps, "cluster_start", t)
        if parts:
            per = max(1, a["shard_series"] // stores)
            small = sd.make_panel(1, 1, a["periods"])
            origin = model.next_origin(small)
            holidays = panel_holidays(small, origin, model.horizon)
            statics = client.scatter(sd.store_statics(stores, a["periods"]), broadcast=True)
            shape = {"n_stores": stores, "n_depts": depts, "depts_per_part": per}
            shape["periods"] = a["periods"]
            names = [f"{i:03d}-part" for i in range(-(-depts // per))]
            inputs: list[tuple] = [(i, shape, statics) for i in range(len(names))]
            pass1, pass2 = sd.generated_sums_task, sd.generated_stage_task
            t = _clock(steps, "plan", t)
        else:
            data = sd.make_panel(stores, depts, a["periods"])
            t = _clock(steps, "generate", t)
            data, short = sd.validated(data)
            out.update(short_dropped=len(short), history_rows=len(data.history))
            t = _clock(steps, "validate", t)
            plan = plan_scoring(model, data, a["shard_series"], None)
            origin, holidays, names = plan.origin, plan.holidays, plan.names
            fingerprint = plan.data_fingerprint
            inputs = [(d,) for d in plan.shards]
            pass1, pass2 = sd.sums_task, sd.stage_task
            del data, plan
            t = _clock(steps, "plan", t)
        futs = [
            client.submit(pass1, model_f, *x, origin, holidays, key=f"sums-{n}")
            for x, n in zip(inputs, names, strict=True)
        ]
        summaries = client.gather(futs)
        del futs
        t = _clock(steps, "features", t)
        if parts:
            fingerprint = sd.combined_fingerprint([s[2] for s in summaries])
            out["history_rows"] = sum(s[1]["history_rows"] for s in summaries)
            out["short_dropped"] = sum(len(s[3]) for s in summaries)
        means, notes = reduce_shards([s[0] for s in summaries], origin, fingerprint, None)
        t = _clock(steps, "reduce", t)
        means_f = client.scatter(means, broadcast=True)
        sink = (target.url, target.table, stage_id)
        # dask-parts: pass 2 drops the short series pass 1 found instead of validating again
        tails = [(s[3],) if parts else () for s in summaries]
        futs = [
            client.submit(
                pass2, model_f, *x, origin, holidays, means_f, *sink, n, *tail, key=f"stage-{n}"
            )
            for x, n, tail in zip(inputs, names, tails, strict=True)
        ]
        del inputs
        costs = [f.result() for f in as_completed(futs)]
        t = _clock(steps, "predict_stage", t)
        try:
            res = commit_stage(target.url, stage_id, table=target.table, runs_table=target.runs)
            t = _clock(steps, "commit", t)
        finally:
            target.drop()
        total = time.perf_counter() - start
        hwm = client.run(sd.vmhwm_mb)
        client.close()
        cluster.close()
    shard_costs = [{**s[1], **c} for s, c in zip(summaries, costs, strict=False)]
    return {
        **out,
        "steps_s": steps,
        "total_s": round(total, 2),
        "batch_s": round(total - steps.get("generate", 0.0), 2),
        "rows_written": res.rows_written,
        "series_forecast": notes.n_series_forecast,
        "shards": len(names),
        "shard_costs": _mean_costs(shard_costs),
        "model_fit_s_untimed": round(fit_s, 1),
        "peaks_mb": peaks.by_role(),
        "worker_vmhwm_mb": sorted(hwm.values(), reverse=True),
        "driver_peak_mb": sd.vmhwm_mb(),
    }


def _mean_costs(costs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per shard of each worker step (wall ``_s``, CPU ``_seconds``: the
    worker process's CPU time, all its threads), and the mean series per shard."""
    keys = sorted({k for c in costs for k in c if k.endswith(("_s", "_seconds", "series"))})
    return {k: round(sum(c.get(k, 0) for c in costs) / max(1, len(costs)), 3) for k in keys}


def run_variant(variant: str, args: dict[str, Any], out: Path) -> None:
    load = _load()
    fn = {"local": run_local, "dask": lambda a: run_dask(a, False)}
    fn["dask-parts"] = lambda a: run_dask(a, True)
    result = fn[variant](args)
    result.update(load_1m_start=load, load_1m_end=_load())
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


# --- orchestration ----------------------------------------------------------------------------


def snapshot_head(dest: Path) -> dict[str, str]:
    """The committed code (``git archive HEAD``) of the packages in ``dest``, plus untracked
    new modules: other people edit the work tree while a long run goes on; every variant
    must run the same code."""
    import shutil
    import subprocess

    root = HERE.parent
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    dest = dest / commit
    if (dest / "UNTRACKED").exists():  # another size may be running from it: keep it
        untracked = (dest / "UNTRACKED").read_text().split()
        return {"commit": commit, "snapshot": str(dest), "untracked": ", ".join(untracked)}
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    dirs = ["salesflow", "features", "flows", "tasks", "configs"]
    archive = subprocess.run(
        ["git", "archive", "HEAD", *dirs], cwd=root, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # a new module someone committed code for but not yet the module itself
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "--", *dirs],
        cwd=root, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for name in (n for n in untracked if n.endswith(".py")):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, dest / name)
    (dest / "UNTRACKED").write_text("\n".join(untracked))
    return {"commit": commit, "snapshot": str(dest), "untracked": ", ".join(untracked)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in VARIANTS:  # one variant: ``bench_scale.py VARIANT ARGS OUT``
        run_variant(argv[0], json.loads(argv[1]), Path(argv[2]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", default="10000", help="comma-separated sizes")
    p.add_argument("--million", action="store_true", help="also 1,000,000 series")
    p.add_argument("--periods", type=int, default=143, help="weeks of history")
    p.add_argument("--variants", default="local,dask")
    p.add_argument("--pg-url", default=PG_URL)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="8GB")
    p.add_argument("--shard-series", type=int, default=20_000)
    p.add_argument("--model-series", type=int, default=1_000)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--report-only", action="store_true", help="rebuild SCALE.md only")
    p.add_argument("--tag", default="", help="appended to the runs' labels (e.g. quiet)")
    a = p.parse_args(argv)
    import _scale_report

    if a.report_only:
        _scale_report.write_report(HERE)
        return
    from _common import QUIET_ENV, describe_machine, run_measured

    os.environ.update(QUIET_ENV)
    work = HERE / "out" / "scale"
    code = snapshot_head(work / "code")
    os.environ["PYTHONPATH"] = code["snapshot"]  # every variant and its workers run it
    sizes = [int(s) for s in a.series.split(",") if s] + ([1_000_000] if a.million else [])
    for n in sizes:
        for variant in a.variants.split(","):
            args = {
                "series": n, "periods": a.periods, "pg_url": a.pg_url, "workers": a.workers,
                "memory_limit": a.memory_limit, "shard_series": a.shard_series,
                "model_series": a.model_series, "cache": str(work / "models" / code["commit"]),
            }  # fmt: skip
            label = f"{variant}-{n}-{a.periods}w" + (f"-{a.tag}" if a.tag else "")
            result = run_measured(
                variant, args, work, a.timeout, label, worker="bench_scale.py", prefix="scale"
            )
            result.update(variant=variant, series=n, periods=a.periods, settings=args, code=code)
            result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            _scale_report.merge(HERE / "scale.json", label, result, describe_machine(PACKAGES))
    _scale_report.write_report(HERE)


if __name__ == "__main__":
    main()
