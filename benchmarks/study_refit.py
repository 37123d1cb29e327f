"""Study: what does refitting a promoted challenger on all data change?

    python benchmarks/study_refit.py --walmart ../shared/data/walmart_recruiting

The retraining flow compares a challenger trained on the data before a 13-week holdout with
the champion on that holdout; if promoted, that challenger never saw the latest 13 weeks.
For each origin T (the first week after the data a retrain would see), two models with the
shipped settings (dev; ``model.horizon`` 39) are fitted, backtest skipped:

* ``challenger``: trained on the weeks before T - 13 weeks (what the policy scores);
* ``refit``: the same configuration trained on every week before T (what is promoted now).

Both forecast the 39 weeks from T with the same history as features, and are scored on the
same rows (series x week with an actual) with the benchmark's metric (WMAE, holiday weight
5), seasonal naive from the same history for reference. Writes
``benchmarks/out/study_refit.json`` (with the machine's description) and prints a table.
A study of one design question, not part of ``run_all.py``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from _accuracy import HOLIDAY_WEIGHT, prepare_data, read_data
from _common import QUIET_ENV
from _study import write_study

ORIGINS = ["2011-11-04", "2012-02-03"]
HOLDOUT_WEEKS = 13


def _fit(data: Any, until: pd.Timestamp, settings: Any) -> tuple[Any, float]:
    from salesflow.modelling.training import make_forecaster

    model = make_forecaster(settings).fit(data.as_of(until))
    return model, model.fit_seconds_


def _score(frame: pd.DataFrame, column: str) -> float:
    from salesflow.modelling.metrics import wmae

    return wmae(frame["y"], frame[column], frame["is_holiday"], HOLIDAY_WEIGHT)


def study_origin(data: Any, origin: pd.Timestamp, settings: Any) -> dict[str, Any]:
    """Fit the challenger and the refit for ``origin``; score both on the same rows."""
    from features.build import period_step
    from salesflow.governance.retraining import Holdout, holdout_frame

    step = period_step(data.freq)
    horizon = settings.model.horizon
    target = Holdout(data.as_of(origin - step), origin, horizon)
    frames, fits, until = {}, {}, {}
    for name, cut in (
        ("challenger", origin - step * (HOLDOUT_WEEKS + 1)),
        ("refit", origin - step),
    ):
        model, fits[name] = _fit(data, cut, settings)
        until[name] = str(model.trained_until_.date())
        frames[name] = holdout_frame(model, data, target).set_index(["unique_id", "ds"])
        print(f"{origin.date()} {name}: trained until {until[name]}, fit {fits[name]:.0f} s")
    common = frames["challenger"].index.intersection(frames["refit"].index)
    ch, rf = frames["challenger"].loc[common], frames["refit"].loc[common]
    score = {
        "challenger": _score(ch, "forecast"),
        "refit": _score(rf, "forecast"),
        "seasonal_naive": _score(ch, "seasonal_naive"),
    }
    snaive = score["seasonal_naive"]
    return {
        "origin": str(origin.date()),
        "trained_until": until,
        "rows": len(common),
        "weeks": int(ch["horizon"].max()),
        "fit_s": {k: round(v, 1) for k, v in fits.items()},
        "wmae": score,
        "ratio_vs_seasonal_naive": {k: v / snaive for k, v in score.items()},
        "refit_vs_challenger": score["refit"] / score["challenger"],
        "by_weeks": {
            label: {
                m: _score(f[f["horizon"].between(lo, hi)], "forecast")
                for m, f in (("challenger", ch), ("refit", rf))
            }
            for label, (lo, hi) in {"1-13": (1, 13), "14-26": (14, 26), "27-39": (27, 39)}.items()
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--walmart", type=Path, required=True, help="Walmart Recruiting folder")
    parser.add_argument("--origins", nargs="+", default=ORIGINS)
    args = parser.parse_args(argv)
    os.environ.update(QUIET_ENV)  # before xgboost loads (busy-waiting threads on 2 cores)
    from salesflow.config.settings import load_settings

    settings = load_settings("dev")
    with tempfile.TemporaryDirectory() as tmp:  # no copy of the Walmart data stays behind
        path = Path(tmp) / "data.pkl"
        meta = prepare_data(args.walmart, path)
        data = read_data(path)
    results = []
    for origin in args.origins:
        r = study_origin(data, pd.Timestamp(origin), settings)
        results.append(r)
        w = r["wmae"]
        print(
            f"{r['origin']}: challenger {w['challenger']:,.1f} | refit {w['refit']:,.1f} "
            f"({r['refit_vs_challenger']:.4f}x) | s-naive {w['seasonal_naive']:,.1f} "
            f"| {r['rows']} rows, {r['weeks']} weeks",
            flush=True,
        )
    (Path(__file__).resolve().parent / "out").mkdir(exist_ok=True)
    return write_study("study_refit", meta, argv, holdout_weeks=HOLDOUT_WEEKS, results=results)


if __name__ == "__main__":
    main()
