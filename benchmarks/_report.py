"""RESULTS.md from the results dictionary that run_all also writes as results.json."""

from __future__ import annotations

from typing import Any

import _peers
import _rossmann_report

METHOD_NOTES = {
    "salesflow": "salesflow's champion pipeline (dev settings, as `salesflow train` ships it)",
    "seasonal_naive": "same week one year earlier (salesflow.backtest)",
    "naive": "last observed value (salesflow.backtest)",
    "mlforecast_lgbm": "mlforecast + LightGBM, seasonal difference (primary recipe)",
    "mlforecast_lgbm_raw": "mlforecast + LightGBM on the level, lags 1-4 and 52",
    "statsforecast": "statsforecast MSTL(52) with AutoETS(ZZN) trend",
    "statsforecast_autoets": "statsforecast AutoETS(season_length=52): non-seasonal (m > 24)",
    "sf_seasonal_naive": "statsforecast SeasonalNaive(52): cross-check",
}


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    return lines + ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]


def _code_line(code: dict[str, Any]) -> str:
    dirty = code.get("uncommitted") or []
    extra = f" plus {len(dirty)} uncommitted files ({', '.join(dirty)})" if dirty else ""
    return (
        f"Code measured: commit {code.get('commit')}{extra}, copied at the start of the run "
        f"(digest {code.get('code_sha256')}) and used by every measurement."
    )


def _header(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    return [
        "# salesflow benchmarks",
        "",
        f"Generated {m['date']} by `{r['command']}` in {_f(r.get('total_s'), 0)} s"
        + (
            " (**--quick smoke run: a handful of series, figures mean nothing**)"
            if r["quick"]
            else ""
        )
        + ".",
        "",
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gb']} GB, {m['platform']}, "
        f"Python {m['python']}; 1-min load average at start {m['load_average_1m_at_start']} "
        "(the machine is shared: timings carry that noise); OMP_WAIT_POLICY="
        f"{m['omp_wait_policy']}.",
        "",
        f"Packages: {pk}.",
        "",
        _code_line(r.get("code", {})),
        "",
        "Every measurement runs in a Python process of its own; *peak MB* is that process's "
        "RSS high-water mark, the kernel's `VmHWM` (`getrusage`'s `ru_maxrss` is in the JSON "
        "too, but Linux carries the parent's high-water mark into it across fork + exec, so "
        "it would show at least the orchestrator's size).",
        "",
    ]


def _protocol(r: dict[str, Any]) -> list[str]:
    d, p = r["data"], r["protocol"]
    return [
        "## Accuracy",
        "",
        f"Data: `{p['data']}` — {d['series_loaded']:,} series / {d['rows_loaded']:,} rows "
        f"loaded; the validation gate dropped {d['series_dropped_short']} short series, leaving "
        f"{d['series']:,} series / {d['rows']:,} rows ({d['first_date']} .. {d['last_date']}), "
        "the same `SalesData` for every method.",
        "",
        f"Split: fit on the weeks before the origin, forecast {p['horizon']} weeks from it; "
        "score every (series, week) with an actual for every series with history before the "
        "origin — salesflow's backtest rows, identical for all methods. Metric: "
        "`salesflow.metrics` (WMAE with holiday weeks x5, MAE, RMSE, bias = mean(forecast - y)).",
        "",
        f"Peers' fallback: a series with fewer than {_peers.SEASON} weeks before the origin is "
        "forecast by salesflow's seasonal naive for every peer (lag 52 / a 52-week season is "
        "undefined for it); so is any row a peer left without a finite forecast.",
        "",
    ]


def _single(r: dict[str, Any]) -> list[str]:
    acc = r["accuracy"]["single_origin_meta"]
    origin = r["protocol"]["single_origin"]
    if "skipped" in acc:
        return [f"### Single origin {origin}: skipped — {acc['skipped']}", ""]
    rows = []
    for name, m in r["accuracy"]["single_origin"].items():
        if "skipped" in m:
            rows.append([name, *["–"] * 9, f"skipped: {m['skipped']}"])
            continue
        fb = m.get("fallback_rows")
        rows.append(
            [
                name,
                m["wmae"],
                m["mae"],
                m["rmse"],
                m["bias"],
                f"{m['ratio_to_seasonal_naive']:.3f}",
                m.get("fit_s"),
                m.get("predict_s"),
                m.get("peak_mb"),
                fb,
                METHOD_NOTES.get(name, ""),
            ]
        )
    head = [
        "method",
        "WMAE",
        "MAE",
        "RMSE",
        "bias",
        "vs s-naive",
        "fit s",
        "predict s",
        "peak MB",
        "fallback rows",
        "what",
    ]
    out = [f"### Single origin {origin} ({acc['rows']:,} rows, {acc['series']:,} series)", ""]
    out += _table(head, rows)
    out += [
        "",
        "*fit s* / *predict s*: salesflow's fit is `GlobalForecaster.fit`, its predict the "
        "rest of `run_backtest` (prediction, baselines, joins); the baselines were computed in "
        "that same process (their peak MB is its). Peers: mlforecast's fit includes building "
        "its features; data preparation (gap filling, exogenous joins) is timed apart "
        "(`prep_s` in results.json). *fallback rows*: rows of this method that are "
        "salesflow's seasonal naive (see above).",
    ]
    chk = acc.get("seasonal_naive_check")
    if chk:
        ours = chk["wmae_salesflow_seasonal_naive"]
        theirs = chk["wmae_statsforecast_seasonal_naive"]
        out += [
            "",
            f"Seasonal-naive cross-check on the {chk['rows']:,} rows statsforecast forecast "
            f"itself: salesflow WMAE {ours:,.1f}, statsforecast SeasonalNaive(52) "
            f"{theirs:,.1f} (difference {theirs - ours:+,.1f}); {chk['rows_differing']:,} rows "
            f"differ: {chk['why']}.",
        ]
    if acc.get("salesflow_reproducible") is not None:
        out += [
            "",
            f"salesflow single-origin run vs the same origin inside the training "
            f"backtest: {acc['salesflow_reproducible']}.",
        ]
    return out + [""]


def _rolling(r: dict[str, Any]) -> list[str]:
    roll = r["accuracy"]["rolling_meta"]
    methods = r["accuracy"]["rolling"]
    origins = roll["origins"]
    head = ["method", *[f"WMAE {o}" for o in origins], "mean WMAE", "pooled WMAE", "vs s-naive"]
    rows = []
    for name, m in methods.items():
        if "skipped" in m:
            rows.append([name, *["–"] * (len(origins) + 3)])
            continue
        per = [m["by_origin"].get(o, {}).get("wmae") for o in origins]
        rows.append(
            [name, *per, m["mean_wmae"], m["pooled_wmae"], f"{m['ratio_to_seasonal_naive']:.3f}"]
        )
    out = [
        f"### Rolling origin ({len(origins)} origins, {r['protocol']['horizon']} weeks each)",
        "",
    ]
    out += _table(head, rows)
    skipped = {k: v["skipped"] for k, v in methods.items() if "skipped" in v}
    out += [""] + [f"- {k}: {v}" for k, v in skipped.items()]
    out += [f"- {n}" for n in roll.get("notes", [])]
    return out + [""]


def _behind(r: dict[str, Any]) -> list[str]:
    lines = ["### Where salesflow is behind", ""]
    lines += [f"- {x}" for x in r["accuracy"].get("salesflow_behind", [])] or ["- nowhere"]
    return lines + [""]


def _speed(r: dict[str, Any]) -> list[str]:
    s = r["speed"]
    out = ["## Speed", ""]
    bc = s.get("batch_cycle", {"skipped": "not run (yet)"})
    if "skipped" in bc:
        out += [f"Batch cycle: skipped — {bc['skipped']}", ""]
    else:
        w = s["write"]
        out += _table(
            ["measurement", "median s", "rows/s", "peak MB", "notes"],
            [
                [
                    "batch cycle: Prefect flow",
                    bc["flow_s"],
                    _rate(bc["rows"], bc["flow_s"]),
                    bc.get("peak_mb"),
                    f"{bc['series']:,} series x 39 weeks, {bc['repeat']} runs",
                ],
                [
                    "batch cycle: plain script",
                    bc["plain_s"],
                    _rate(bc["rows"], bc["plain_s"]),
                    bc.get("peak_mb"),
                    f"flow / plain = {bc['ratio']:.2f}",
                ],
                [
                    "write_forecasts (PostgreSQL)",
                    w["write_s"],
                    w["rows_per_s"],
                    bc.get("peak_mb"),
                    "COPY to staging + upsert, fresh table",
                ],
                [
                    "raw binary COPY",
                    w["copy_s"],
                    w["copy_rows_per_s"],
                    bc.get("peak_mb"),
                    f"floor; write / COPY = {w['write_over_copy_ratio']:.2f}",
                ],
            ],
        )
        out += [
            "",
            "Peak MB of these four rows: the one process that ran them all "
            "(`bench_batch_cycle`: training its champion, flows, plain runs, writes; the "
            "temporary Prefect server is a separate process, not counted). "
            "The champion scored is `bench_batch_cycle`'s fast-settings model "
            f"({_champion(bc)}).",
            "",
        ]
    tr = s.get("train", {"skipped": "not run (yet)"})
    if "skipped" in tr:
        out += [f"Training: skipped — {tr['skipped']}", ""]
    else:
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in tr["step_s"].items())
        out += [
            f"Training as `salesflow train` (fit on all + 3-origin backtest, no Prefect/MLflow): "
            f"**{tr['train_s']:.0f} s** ({steps}); {tr['train_rows']:,} training rows; "
            f"peak {_f(tr.get('peak_mb'))} MB.",
            "",
        ]
    for key, label in (("drift", "shipped settings"), ("drift_full", "every row tested")):
        d = s.get(key, {})
        if "skipped" in d:
            out += [f"Drift ({label}): skipped — {d['skipped']}", ""]
        elif d:
            out += [
                f"Drift check ({label}): **{d['drift_s']:.1f} s** on {d['rows_current']:,} "
                f"current vs {d['rows_reference']:,} reference rows x {d['columns']} columns "
                f"({d['rows_tested_per_side']:,} tested per side, {d['method']}); Evidently "
                f"import {d['evidently_import_s']:.1f} s apart; peak {_f(d.get('peak_mb'))} MB; "
                f"{d['implementation']}.",
                "",
            ]
    return out


def _champion(bc: dict[str, Any]) -> str:
    if bc["champion"].get("reused"):
        return "reused from an earlier run of it"
    return f"trained in this run in {_f(bc['champion'].get('seconds'))} s"


def _rate(rows: int, seconds: float) -> int:
    return round(rows / seconds) if seconds else 0


def _scale(r: dict[str, Any]) -> list[str]:
    out = ["## Scale (synthetic panels)", ""]
    rows = []
    for n, m in r["scale"].items():
        rows.append(
            [
                int(n),
                m.get("periods"),
                m.get("history_rows"),
                m.get("batch_s"),
                m.get("train_s"),
                m.get("peak_mb"),
                m.get("batch_peak_mb"),
                m.get("train_peak_mb"),
                m.get("note", ""),
            ]
        )
    head = [
        "series",
        "weeks",
        "history rows",
        "batch s",
        "train s",
        "peak MB",
        "batch peak MB",
        "train peak MB",
        "notes",
    ]
    out += _table(head, rows)
    out += ["", r.get("scale_protocol", ""), ""]
    return out


def _peer_config() -> list[str]:
    lgbm = ", ".join(f"{k}={v}" for k, v in _peers.LGBM_PARAMS.items())
    recipes = "; ".join(
        f"`{k}`: lags {v['lags']}" + (", Differences([52])" if v["diff"] else "")
        for k, v in _peers.MLF_RECIPES.items()
    )
    return [
        "## Peer configurations",
        "",
        "- Peers see the validated data on the regular weekly grid: each series from its first "
        "week to the week before the origin, missing weeks filled with 0 (salesflow keeps them "
        "missing).",
        f"- mlforecast {recipes}; both: rolling means of lag 1 over 4 and 13 weeks, date "
        "features week of year and month, static store/dept/store type (categorical) and store "
        "size, exogenous is_holiday and the 9 store-week covariates of features.csv (known "
        "ahead, as salesflow uses them), recursive 39 steps, holiday weeks weighted 5; "
        f"LightGBM {lgbm}. Recipes fixed before scoring any test origin; both are reported.",
        "- statsforecast: MSTL(season_length=52, trend_forecaster=AutoETS(model='ZZN')); "
        "AutoETS(season_length=52) for reference (statsforecast allows no seasonal ETS above a "
        "season of 24, so it is non-seasonal, and it is the slowest); SeasonalNaive(52) to "
        "cross-check salesflow's seasonal naive. n_jobs=2.",
        "",
    ]


def render(r: dict[str, Any]) -> str:
    parts = _header(r)
    walmart = "protocol" in r  # absent when only --rossmann has run so far
    if walmart:
        parts += _protocol(r)
    if "single_origin" in r["accuracy"]:
        parts += _single(r)
    if "rolling" in r["accuracy"]:
        parts += _rolling(r)
    if walmart:
        parts += _behind(r) + _peer_config()
    if "rossmann" in r["accuracy"]:
        parts += _rossmann_report.section(r)
    if walmart:
        parts += _speed(r) + _scale(r)
    if "api" in r:  # written by bench_api.py; kept when run_all re-renders
        from bench_api import render_section

        parts += [render_section(r["api"])]
    if r.get("notes"):
        parts += ["## Notes", "", *[f"- {n}" for n in r["notes"]], ""]
    return "\n".join(parts).rstrip() + "\n"
