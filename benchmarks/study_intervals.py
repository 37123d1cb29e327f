"""Study: how well do salesflow's 80/95 % bounds cover a backtest window they never saw?

    python benchmarks/study_intervals.py CACHE                        # the tables
    python benchmarks/study_intervals.py CACHE --build rossmann --path ../shared/data/rossmann

``CACHE`` holds one folder per data set (``rossmann``, ``walmart``, ``synthetic``) with one
backtest frame per origin (``<origin>.parquet``: ``run_backtest`` rows of one origin, as
``salesflow train`` computes them; ``--build`` makes them, one origin at a time, so an
interrupted build resumes). Rossmann: ``configs/rossmann.yaml``, 6 origins 42 days apart
(2014-10-11 .. 2015-05-09); Walmart and synthetic: dev settings, 4 origins 13 weeks apart
(2011-05-06 .. 2012-02-03; more do not fit before the 52-week minimum history).

Every method learns its bounds from some origins' rows and is scored on another origin's
open days (coverage of 80 / 95 %, mean width ``hi - lo`` after clipping at 0, relative to
the per-horizon method's on the same rows). Protocols:

- ``loo``: each origin left out in turn, bounds from all the others. A method's own
  calibration (the width factor) sees only those others (nested leave-one-origin-out).
- ``loo3``: the same over the newest 3 origins only (the shipped ``backtest.n_origins``).
- ``forward3`` (Rossmann): each origin with three earlier ones, bounds from those three:
  exactly what ``salesflow train`` on the data before that origin would have shipped
  (its backtest origins are the three 42 days apart before it), i.e. the benchmark's
  measurement of ``run_all.py --rossmann`` with intervals, without its refits.

Methods (quantile table + width factor): ``per_horizon`` (salesflow before: quantiles of
each horizon's residuals, no factor); ``pooled`` (quantiles pooled over horizons along a
fitted spread line, all origins' rows together: ``intervals.residual_quantiles``);
``pooled+loo`` (times the pooled leave-one-origin-out factor: ``intervals.loo_multipliers``);
``pooled+worst`` (the factor of the worst left-out origin); ``median`` (the median over
origins of each origin's pooled table: ``intervals.origin_median_quantiles``);
``median+loo_median`` (times the median of the per-origin leave-one-out factors);
``median+cross`` -- what salesflow ships -- (times the median over ordered origin pairs of
the factor stretching one origin's table to cover the other's rows:
``intervals.cross_origin_multipliers``). Writes
``benchmarks/out/study_intervals.json`` with the machine's description. A study of one
design question, not part of ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import HERE, QUIET_ENV, describe_machine

from salesflow.modelling import intervals as iv
from salesflow.modelling.model import INTERVAL_LEVELS

DATASETS = {
    "rossmann": ("rossmann", 6, {}),
    "walmart": ("dev", 4, {"source": "walmart"}),
    "synthetic": ("dev", 4, {}),
}
QS = sorted({q for pair in INTERVAL_LEVELS.values() for q in pair})
Fold = tuple[pd.Timestamp, list[pd.Timestamp]]


# --- the cache ------------------------------------------------------------------------------


def build(cache: Path, name: str, path: str | None) -> None:
    """Backtest frames of ``name`` (one origin at a time, newest first) into
    ``cache/<name>/<origin>.parquet``; origins already there are skipped."""
    from features.build import make_grid
    from salesflow.config.settings import load_settings
    from salesflow.data.sources import load_sales
    from salesflow.data.validation import drop_short_series, validate_sales
    from salesflow.modelling.backtest import rolling_origins, run_backtest
    from salesflow.modelling.training import make_forecaster

    env, n_origins, data_over = DATASETS[name]
    settings = load_settings(env, data={**data_over, **({"path": path} if path else {})})
    data = load_sales(settings.data)
    report = validate_sales(data, settings.validation, settings.data.as_of, settings.model.horizon)
    data = drop_short_series(data, report)  # as the training flow's validation step
    model = make_forecaster(settings)
    grid = make_grid(data.history, None, [], data.freq)
    b = settings.backtest
    idx = rolling_origins(grid, model.horizon, n_origins, b.step, model.min_train_history)
    out = cache / name
    out.mkdir(parents=True, exist_ok=True)
    for origin in reversed([grid.dates[t] for t in idx]):
        target = out / f"{origin.date()}.parquet"
        if target.exists():
            continue
        bt = run_backtest(
            data, lambda: make_forecaster(settings), 1, b.step, b.holiday_weight, origins=[origin]
        )
        bt.frame.to_parquet(target)
        print(f"{name} {origin.date()}: {len(bt.frame)} rows", flush=True)


def load(cache: Path, name: str) -> pd.DataFrame:
    """The cached frames of ``name``, open days only. Columns: origin, horizon, y,
    forecast, scale, res."""
    files = sorted((cache / name).glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
    if "closed" in frame:
        frame = frame[~frame["closed"].astype(bool)]
    frame = frame[["origin", "horizon", "y", "forecast", "scale"]].reset_index(drop=True)
    return frame.assign(res=(frame["y"] - frame["forecast"]) / frame["scale"])


# --- methods: training rows -> (quantile table, factor per level) ---------------------------


def per_horizon(res: pd.DataFrame, horizon: int, qs: list[float]) -> pd.DataFrame:
    """salesflow's table before: the quantiles of each horizon's residuals alone."""
    table = res.groupby("horizon")["res"].quantile(qs).unstack()
    table.columns = [f"q{q}" for q in qs]
    return table.reindex(range(1, horizon + 1)).ffill().bfill()


def worst_origin(res: pd.DataFrame, horizon: int) -> dict[int, float]:
    """The largest of the per-origin factors (each origin left out in turn)."""
    out: dict[int, float] = {}
    for level, (lo, hi) in INTERVAL_LEVELS.items():
        per = []
        for o in res["origin"].unique():
            held = res["origin"] == o
            table = iv.residual_quantiles(res[~held], horizon, QS)
            t = iv.needed_multipliers(res[held], table, lo, hi)
            per.append(iv.conformal_quantile(t, level / 100))
        out[level] = max(per) if len(per) > 1 else 1.0
    return out


def _ones(_res: pd.DataFrame, _h: int) -> dict[int, float]:
    return {level: 1.0 for level in INTERVAL_LEVELS}


Method = tuple[Callable[..., pd.DataFrame], Callable[[pd.DataFrame, int], dict[int, float]]]
METHODS: dict[str, Method] = {
    "per_horizon": (per_horizon, _ones),
    "pooled": (iv.residual_quantiles, _ones),
    "pooled+loo": (iv.residual_quantiles, lambda r, h: iv.loo_multipliers(r, h, INTERVAL_LEVELS)),
    "pooled+worst": (iv.residual_quantiles, worst_origin),
    "pooled+loo_median": (
        iv.residual_quantiles,
        lambda r, h: iv.loo_multipliers(r, h, INTERVAL_LEVELS, combine="median"),
    ),
    "median": (iv.origin_median_quantiles, _ones),
    "median+loo": (
        iv.origin_median_quantiles,
        lambda r, h: iv.loo_multipliers(r, h, INTERVAL_LEVELS, iv.origin_median_quantiles),
    ),
    "median+loo_median": (
        iv.origin_median_quantiles,
        lambda r, h: iv.loo_multipliers(
            r, h, INTERVAL_LEVELS, iv.origin_median_quantiles, "median"
        ),
    ),
    "median+cross": (
        iv.origin_median_quantiles,
        lambda r, h: iv.cross_origin_multipliers(r, h, INTERVAL_LEVELS),
    ),
}
SHIPPED = "median+cross"


# --- protocols and scores -------------------------------------------------------------------


def folds(frame: pd.DataFrame, protocol: str) -> list[Fold]:
    """(test origin, training origins) pairs of ``protocol`` (see the module docstring)."""
    origins = sorted(frame["origin"].unique())
    if protocol == "loo3":
        origins = origins[-3:]
    if protocol == "forward3":
        return [(origins[i], origins[i - 3 : i]) for i in range(3, len(origins))]
    return [(o, [x for x in origins if x != o]) for o in origins]


def score(frame: pd.DataFrame, method: Method, fold: Fold, horizon: int) -> dict[str, Any]:
    """Coverage and mean width of one method's bounds on one fold's test origin."""
    test, train = fold
    rows = frame[frame["origin"].isin(train)]
    held = frame[frame["origin"] == test].copy()
    table_fn, factor_fn = method
    table = table_fn(rows, horizon, QS)
    factors = factor_fn(rows, horizon)
    out = iv.add_bounds(held, table, horizon, INTERVAL_LEVELS, factors)
    row: dict[str, Any] = {"origin": str(pd.Timestamp(test).date()), "n": len(held)}
    for level in INTERVAL_LEVELS:
        lo, hi = out[f"lo_{level}"].clip(lower=0), out[f"hi_{level}"].clip(lower=0)
        row[f"coverage_{level}"] = float(((lo <= held["y"]) & (held["y"] <= hi)).mean())
        row[f"width_{level}"] = float((hi - lo).mean())
        row[f"factor_{level}"] = round(float(factors[level]), 3)
    return row


def study(frame: pd.DataFrame, protocol: str) -> dict[str, Any]:
    """Per method: rows per test origin, pooled coverage, width relative to per_horizon."""
    horizon = int(frame["horizon"].max())
    per = {
        name: [score(frame, m, f, horizon) for f in folds(frame, protocol)]
        for name, m in METHODS.items()
    }
    base = pd.DataFrame(per["per_horizon"])
    out: dict[str, Any] = {}
    for name, rows in per.items():
        t = pd.DataFrame(rows)
        pooled: dict[str, float] = {}
        for level in INTERVAL_LEVELS:
            pooled[f"coverage_{level}"] = float(np.average(t[f"coverage_{level}"], weights=t.n))
            width = np.average(t[f"width_{level}"], weights=t.n)
            pooled[f"width_{level}_vs_per_horizon"] = float(
                width / np.average(base[f"width_{level}"], weights=base.n)
            )
        out[name] = {"pooled": pooled, "by_origin": rows}
    return out


def print_table(name: str, protocol: str, result: dict[str, Any]) -> None:
    print(f"\n{name} / {protocol}: coverage 80 % | 95 % (pooled; per test origin), width vs before")
    for method, r in result.items():
        p = r["pooled"]
        per = "  ".join(
            f"{x['origin']} {x['coverage_80']:.1%}|{x['coverage_95']:.1%}" for x in r["by_origin"]
        )
        fac = "/".join(f"{x['factor_80']:.2f},{x['factor_95']:.2f}" for x in r["by_origin"])
        print(
            f"  {method:16s} {p['coverage_80']:6.1%} | {p['coverage_95']:6.1%}   "
            f"x{p['width_80_vs_per_horizon']:.2f} | x{p['width_95_vs_per_horizon']:.2f}   "
            f"[{per}]  factors {fac}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path, help="folder of <data set>/<origin>.parquet")
    parser.add_argument("--build", choices=sorted(DATASETS), help="make one data set's frames")
    parser.add_argument("--path", help="the data folder for --build (rossmann, walmart)")
    parser.add_argument("--only", nargs="+", choices=sorted(DATASETS), help="these data sets")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), help="these methods")
    args = parser.parse_args(argv)
    os.environ.update(QUIET_ENV)
    if args.build:
        build(args.cache, args.build, args.path)
        return {}
    report: dict[str, Any] = {
        "machine": describe_machine(["salesflow", "xgboost", "pandas", "numpy"]),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "shipped_method": SHIPPED,
        "results": {},
    }
    if args.methods:
        for name in set(METHODS) - {"per_horizon", *args.methods}:
            del METHODS[name]
    for name in args.only or DATASETS:
        if not (args.cache / name).is_dir():
            continue
        frame = load(args.cache, name)
        protocols = ["loo", "loo3"] + (["forward3"] if frame["origin"].nunique() >= 4 else [])
        report["results"][name] = {
            "origins": [str(pd.Timestamp(o).date()) for o in sorted(frame["origin"].unique())],
            "open_rows": len(frame),
        }
        for protocol in protocols:
            result = study(frame, protocol)
            report["results"][name][protocol] = result
            print_table(name, protocol, result)
    path = HERE / "out" / "study_intervals.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return report


if __name__ == "__main__":
    main()
