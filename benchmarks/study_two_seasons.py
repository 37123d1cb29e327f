"""Study: how much of the value two seasons back should the seasonal baseline take?

    python benchmarks/study_two_seasons.py --walmart ../shared/data/walmart_recruiting

For each origin and each weight w (``features.two_season_weight``; 0 = last season only),
salesflow's shipped pipeline (dev settings otherwise, each seed given) is fitted on the weeks
before the origin and forecasts the 39 weeks from it (2012-05-04 has 26 weeks of actuals
left); the baseline alone and the model are scored with the benchmark's data, rows and
metric code. Writes ``benchmarks/out/study_two_seasons.json`` (with the machine's
description) and prints a table. A study of one design question, not part of ``run_all.py``.
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

ORIGINS = ["2011-08-05", "2011-11-04", "2012-02-03", "2012-05-04"]
WEIGHTS = [0.0, 0.25, 0.5]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--walmart", type=Path, required=True, help="Walmart Recruiting folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7], help="XGBoost seeds")
    parser.add_argument("--origins", nargs="+", default=ORIGINS)
    parser.add_argument("--weights", type=float, nargs="+", default=WEIGHTS)
    args = parser.parse_args(argv)
    os.environ.update(QUIET_ENV)  # before xgboost loads (busy-waiting threads on 2 cores)
    from salesflow.modelling.metrics import wmae

    data, meta = study_data(args.walmart)
    results: list[dict[str, Any]] = []
    for origin in args.origins:
        for seed, w in ((s, w) for s in args.seeds for w in args.weights):
            rows, fit_s = origin_rows(data, pd.Timestamp(origin), seed, {"two_season_weight": w})
            hol = rows["is_holiday"]
            score = {
                name: wmae(rows["y"], rows[col], hol, HOLIDAY_WEIGHT)
                for name, col in (
                    ("salesflow", "forecast"),
                    ("baseline", "baseline"),
                    ("seasonal_naive", "seasonal_naive"),
                )
            }
            snaive = score["seasonal_naive"]
            results.append(
                {
                    "origin": origin,
                    "two_season_weight": w,
                    "seed": seed,
                    "rows": len(rows),
                    "weeks": int(rows["horizon"].max()),
                    "fit_s": round(fit_s, 1),
                    "wmae": score,
                    "ratio": {k: v / snaive for k, v in score.items()},
                }
            )
            print(
                f"{origin} seed {seed} w={w}: salesflow {score['salesflow']:,.1f} "
                f"({score['salesflow'] / snaive:.4f}) | baseline {score['baseline']:,.1f} "
                f"({score['baseline'] / snaive:.4f}) | s-naive {snaive:,.1f} | fit {fit_s:.0f} s",
                flush=True,
            )
    return write_study(
        "study_two_seasons",
        meta,
        argv,
        results=results,
    )


if __name__ == "__main__":
    main()
