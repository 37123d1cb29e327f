"""Scores of the accuracy runs: salesflow's backtest rows with every peer joined on
(``_accuracy.combine``), per method, single origin and rolling origin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _accuracy as acc
import numpy as np
import pandas as pd

from salesflow.data.schema import SalesData

SINGLE_PEERS = [
    "mlforecast_lgbm",
    "mlforecast_lgbm_raw",
    "statsforecast",
    "statsforecast_autoets",
    "sf_seasonal_naive",
]
CROSS_CHECKS = ("sf_seasonal_naive",)  # left out of "where salesflow is behind"
ROLLING_PEERS = ["mlforecast_lgbm", "mlforecast_lgbm_raw", "statsforecast", "sf_seasonal_naive"]


def _base(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    return frame[[*acc.FRAME_COLUMNS, "forecast"]].rename(columns={"forecast": "salesflow"})


def _peer_frames(work: Path, runs: dict[str, dict], kind: str) -> dict[str, pd.DataFrame]:
    return {
        p: pd.read_parquet(work / f"peer-{p}-{kind}.parquet")
        for p, run in runs.items()
        if "skipped" not in run
    }


def score_single(
    work: Path, origin: str, data: SalesData, sf: dict, peers: dict[str, dict]
) -> dict[str, Any]:
    """Per method at the single origin: the metrics, the ratio to seasonal naive, fit and
    predict seconds, the peak RSS of the process that ran it, and the peers' fallbacks."""
    if "skipped" in sf:
        return {"skipped": sf["skipped"], "methods": {}}
    frame, fallbacks = acc.combine(
        _base(work / "salesflow_single.parquet"), _peer_frames(work, peers, "single"), data
    )
    done = [p for p in SINGLE_PEERS if p in fallbacks]
    methods = ["salesflow", *acc.BASELINES, *done]
    scored = acc.score_methods(frame, methods).set_index("model")
    out: dict[str, Any] = {}
    base_s = sf["baselines_s"]
    timing = {"salesflow": (sf["fit_s"], sf["predict_s"], sf.get("peak_mb"))}
    timing |= {b: (0.0, base_s, sf.get("peak_mb")) for b in acc.BASELINES}
    for p in done:
        tm = peers[p]["by_origin"][origin]
        timing[p] = (tm["fit_s"], tm["predict_s"], peers[p].get("peak_mb"))
    for m in methods:
        fit_s, predict_s, peak = timing[m]
        row = {k: float(v) for k, v in scored.loc[m].items()}
        out[m] = {**row, "fit_s": fit_s, "predict_s": predict_s, "peak_mb": peak}
        if m in fallbacks:
            out[m]["fallback_rows"] = sum(fallbacks[m].values())
            out[m]["fallback"] = fallbacks[m]
            out[m]["peer_run"] = dict(peers[m]["by_origin"][origin])
    for p in SINGLE_PEERS:
        if p not in done:
            out[p] = {"skipped": peers[p]["skipped"]}
    result = {
        "origin": origin,
        "rows": len(frame),
        "series": int(frame["unique_id"].nunique()),
        "methods": out,
    }
    if "sf_seasonal_naive" in done:
        result["seasonal_naive_check"] = acc.seasonal_naive_check(frame)
    return result


def score_rolling(
    work: Path, origins: list[str], data: SalesData, train: dict, single: dict, rolling: dict
) -> dict[str, Any]:
    """Per method and origin: the metrics; per method: mean WMAE over the origins, pooled
    WMAE over all their rows and its ratio to seasonal naive's."""
    if "skipped" in train:
        return {"origins": origins, "methods": {}, "notes": [train["skipped"]]}
    both = {p: [single[p], rolling[p]] for p in ROLLING_PEERS}
    peers = {}
    for p, runs in both.items():
        if all("skipped" not in run for run in runs):
            peers[p] = pd.concat(
                [pd.read_parquet(work / f"peer-{p}-{k}.parquet") for k in ("single", "rolling")],
                ignore_index=True,
            )
    frame, fallbacks = acc.combine(_base(work / "salesflow_rolling.parquet"), peers, data)
    methods = ["salesflow", *acc.BASELINES, *peers]
    dated = frame.assign(origin=frame["origin"].dt.strftime("%Y-%m-%d"))
    by = acc.score_methods(dated, methods, "origin")
    pooled = acc.score_methods(frame, methods).set_index("model")
    out: dict[str, Any] = {}
    for m in methods:
        rows = by[by["model"] == m].set_index("origin")
        per = {
            o: {k: float(rows.loc[o, k]) for k in ("wmae", "mae", "rmse", "bias", "n")}
            for o in rows.index
        }
        out[m] = {
            "by_origin": per,
            "mean_wmae": float(rows["wmae"].mean()),
            "pooled_wmae": float(pooled.loc[m, "wmae"]),
            "ratio_to_seasonal_naive": float(pooled.loc[m, "ratio_to_seasonal_naive"]),
            **({"fallback": fallbacks[m]} if m in fallbacks else {}),
        }
    for p, runs in both.items():
        if p not in peers:
            reasons = "; ".join(run["skipped"] for run in runs if "skipped" in run)
            out[p] = {"skipped": reasons}
    ets = single.get("statsforecast_autoets", {}).get("by_origin", {})
    ets_fit = next(iter(ets.values()), {}).get("fit_s")
    notes = [
        "salesflow and both baselines: the training backtest (`evaluate`: 3 origins 13 weeks "
        "apart, the same origins); the peers: their single-origin run (reused) plus one run "
        "over the other origins",
        "statsforecast_autoets: single origin only"
        + (f" (its fit took {ets_fit:.0f} s there)" if ets_fit else ""),
    ]
    return {"origins": origins, "rows": len(frame), "methods": out, "notes": notes}


def reproducible(work: Path) -> str:
    """Does the single-origin salesflow run match the same origin of the training backtest?"""
    a, b = _base(work / "salesflow_single.parquet"), _base(work / "salesflow_rolling.parquet")
    b = b[b["origin"] == a["origin"].iloc[0]]
    m = a.merge(b, on=["unique_id", "ds"], suffixes=("", "_bt"))
    if len(m) != len(a) or len(b) != len(a):
        return f"row sets differ ({len(a)} vs {len(b)} rows)"
    gap = float(np.abs(m["salesflow"] - m["salesflow_bt"]).max())
    return "identical forecasts" if gap == 0 else f"max |difference| {gap:.3g}"


def _lower(metric: str, v: dict[str, Any], sf: dict[str, Any]) -> bool:
    if v.get(metric) is None or sf.get(metric) is None:
        return False
    if metric == "bias":
        return abs(v[metric]) < abs(sf[metric])
    return v[metric] < sf[metric]


def where_behind(a: dict[str, Any]) -> list[str]:
    """Every place another method (not a cross-check) beat salesflow: WMAE per origin and on
    the mean; at the single origin also MAE, RMSE, |bias|, fit seconds and peak memory."""
    out = []
    single = {k: v for k, v in a.get("single_origin", {}).items() if k not in CROSS_CHECKS}
    sf = single.get("salesflow", {})
    labels = {"wmae": "WMAE", "mae": "MAE", "rmse": "RMSE", "bias": "|bias|",
              "fit_s": "fit seconds", "peak_mb": "peak MB"}  # fmt: skip
    for metric, label in labels.items():
        if metric in ("fit_s", "peak_mb"):  # the baselines have no fit of their own
            better = [m for m, v in single.items() if m not in ("salesflow", *acc.BASELINES)]
        else:
            better = [m for m in single if m != "salesflow"]
        better = [m for m in better if _lower(metric, single[m], sf)]
        if better:
            shown = ", ".join(f"{m} {abs(single[m][metric]):,.1f}" for m in better)
            out.append(f"single origin, {label}: {shown} vs salesflow {abs(sf[metric]):,.1f}")
    roll = a.get("rolling", {})
    sf_r = roll.get("salesflow", {})
    for m, v in roll.items():
        if m in ("salesflow", *CROSS_CHECKS) or "by_origin" not in v or "by_origin" not in sf_r:
            continue
        for o, s in v["by_origin"].items():
            if s["wmae"] < sf_r["by_origin"][o]["wmae"]:
                out.append(
                    f"origin {o}: {m} WMAE {s['wmae']:,.1f} < salesflow "
                    f"{sf_r['by_origin'][o]['wmae']:,.1f}"
                )
        if v["mean_wmae"] < sf_r["mean_wmae"]:
            mean = f"{v['mean_wmae']:,.1f} < salesflow {sf_r['mean_wmae']:,.1f}"
            out.append(f"rolling mean over the origins: {m} {mean}")
    return out
