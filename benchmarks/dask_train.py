"""Training on one process vs on Dask (``xgboost.dask``), on the seeded synthetic panel.

    .venv/bin/python -m benchmarks.dask_train --stores 100 --depts 100 --periods 143

Each variant runs in a fresh process (``--only local|dask``): features + fit of the dev
settings' forecaster on the whole panel; wall time of the fit (panel generation and cluster
start timed apart) and the peak RSS of every process (``getrusage`` maxrss: the driver, and
each Dask worker asked at the end). Prints one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(only: str, stores: int, depts: int, periods: int, workers: int) -> dict:
    from benchmarks._scale import make_panel
    from salesflow.config.settings import load_settings
    from salesflow.modelling.dask_fit import compute_fitter
    from salesflow.modelling.training import make_forecaster

    t0 = time.perf_counter()
    data = make_panel(stores, depts, periods)
    out: dict = {"variant": only, "series": data.n_series, "generate_s": time.perf_counter() - t0}
    compute = {"engine": "dask" if only == "dask" else "local", "n_workers": workers}
    settings = load_settings("dev", compute=compute)
    model = make_forecaster(settings)
    with compute_fitter(settings.compute) as fitter:
        t1 = time.perf_counter()
        if fitter is None:
            model.fit(data)
        else:
            out["cluster_start_s"] = t1 - t0 - out["generate_s"]
            fitter.client.run(lambda: None)  # workers up before the clock starts
            t1 = time.perf_counter()
            fitter(model, data)
            out["dask_fit"] = model.dask_fit_
            maxrss = fitter.client.run(
                lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            )
            out["worker_peak_mb"] = sorted(round(v) for v in maxrss.values())
        out["fit_s"] = time.perf_counter() - t1
    out["driver_peak_mb"] = round(_peak_mb())
    out["train_rows"], out["candidate_rows"] = model.n_train_rows_, model.n_candidate_rows_
    out["load_1min"] = os.getloadavg()[0]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--stores", type=int, default=100)
    p.add_argument("--depts", type=int, default=100)
    p.add_argument("--periods", type=int, default=143)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--only", choices=["local", "dask"])
    a = p.parse_args()
    if a.only:
        print(json.dumps(run(a.only, a.stores, a.depts, a.periods, a.workers)), flush=True)
        return
    for variant in ("local", "dask"):
        args = [sys.executable, "-m", "benchmarks.dask_train", "--only", variant]
        args += ["--stores", str(a.stores), "--depts", str(a.depts), "--periods", str(a.periods)]
        subprocess.run([*args, "--workers", str(a.workers)], check=True)


if __name__ == "__main__":
    main()
