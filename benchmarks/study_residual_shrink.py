"""Study: would shrinking the trees' correction toward the seasonal baseline help?

    python benchmarks/study_residual_shrink.py --walmart ../shared/data/walmart_recruiting

For each origin, salesflow's shipped model (dev settings, seed as given) is fitted on the
weeks before it and forecasts the 39 weeks from it; every forecast is then recomputed as
``baseline + a * (forecast - baseline)`` for a grid of ``a`` (1 = the shipped model, 0 =
the seasonal baseline alone) and scored with the benchmark's data, rows and metric code.
Writes ``benchmarks/out/study_residual_shrink.json`` (with the machine's description) and
prints a table. A study of one design question, not part of ``run_all.py``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pandas as pd
from _accuracy import HOLIDAY_WEIGHT
from _common import QUIET_ENV
from _study import origin_rows, study_data, write_study

ORIGINS = ["2011-08-05", "2011-11-04", "2012-02-03"]
SHRINK = [0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--walmart", type=Path, required=True, help="Walmart Recruiting folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7], help="XGBoost seeds")
    parser.add_argument("--origins", nargs="+", default=ORIGINS)
    parser.add_argument(
        "--two-season-weight",
        type=float,
        default=None,
        help="features.two_season_weight (default: the shipped setting; the README's table "
        "was made before it existed, which is 0)",
    )
    args = parser.parse_args(argv)
    os.environ.update(QUIET_ENV)  # before xgboost loads (busy-waiting threads on 2 cores)
    from salesflow.modelling.metrics import wmae

    data, meta = study_data(args.walmart)
    weight = args.two_season_weight
    features = None if weight is None else {"two_season_weight": weight}
    results: list[dict[str, Any]] = []
    for origin in args.origins:
        for seed in args.seeds:
            rows, fit_s = origin_rows(data, pd.Timestamp(origin), seed, features)
            hol = rows["is_holiday"]
            snaive = wmae(rows["y"], rows["seasonal_naive"], hol, HOLIDAY_WEIGHT)
            correction = rows["forecast"] - rows["baseline"]
            by_a = {
                str(a): wmae(rows["y"], rows["baseline"] + a * correction, hol, HOLIDAY_WEIGHT)
                for a in SHRINK
            }
            results.append(
                {
                    "origin": origin,
                    "seed": seed,
                    "rows": len(rows),
                    "fit_s": round(fit_s, 1),
                    "seasonal_naive_wmae": snaive,
                    "wmae_by_shrink": by_a,
                    "ratio_by_shrink": {a: v / snaive for a, v in by_a.items()},
                }
            )
            best = min(by_a, key=by_a.__getitem__)
            print(
                f"{origin} seed {seed}: " + " ".join(f"{a}:{v:,.1f}" for a, v in by_a.items()),
                f"| s-naive {snaive:,.1f} | best a={best} ({by_a[best] / snaive:.4f})",
                flush=True,
            )
    return write_study(
        "study_residual_shrink",
        meta,
        argv,
        shrink_grid=SHRINK,
        features=features,
        results=results,
    )


if __name__ == "__main__":
    main()
