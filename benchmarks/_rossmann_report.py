"""The "Rossmann (daily)" section of RESULTS.md, from ``accuracy.rossmann`` (scores),
``accuracy.rossmann_meta`` (data, protocol, machine, command) and ``speed.rossmann``."""

from __future__ import annotations

from typing import Any

import _rossmann_peers as peers

GOAL_RMSPE = 0.11
NOTES = {
    "salesflow": "salesflow, `configs/{env}.yaml`, {how}",
    "seasonal_naive_7": "same weekday, latest week before the origin with the store open",
    "seasonal_naive_364": "same weekday 364 days before (if closed: 1-4 weeks earlier)",
    "median_13w": "median of store x weekday x promo over the 13 weeks before the origin",
    "mlforecast_lgbm": "mlforecast + LightGBM (recipe below)",
    "statsforecast_mstl": "statsforecast MSTL([7, 364]), AutoETS(ZZN) trend",
}


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}" if abs(v) < 10 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _step(method: str) -> str:
    return "baselines" if method.startswith(("seasonal_naive", "median")) else method


def _timing(speed: dict[str, Any], method: str) -> tuple[str, str]:
    """Mean wall seconds per origin of the method's process, and its largest peak MB."""
    runs = [v for v in speed.get(_step(method), {}).values() if "skipped" not in v]
    if not runs:
        return "–", "–"
    wall = sum(v["wall_s"] for v in runs) / len(runs)
    peaks = [v["peak_mb"] for v in runs if v.get("peak_mb") is not None]
    return f"{wall:,.0f}", (f"{max(peaks):,.0f}" if peaks else "–")


def _rows(r: dict[str, Any], origins: list[str]) -> list[list[str]]:
    methods, meta = r["accuracy"]["rossmann"], r["accuracy"]["rossmann_meta"]
    speed = r.get("speed", {}).get("rossmann", {})
    out = []
    for name, m in methods.items():
        sf = meta.get("salesflow", {})
        how = (
            "as `salesflow train` would run on the data before the origin (its backtest for "
            "the intervals, then the fit)"
            if sf.get("intervals")
            else "one fit on the data before the origin (run_backtest; no intervals)"
        )
        note = NOTES.get(name, "").format(env=sf.get("env"), how=how)
        if "skipped" in m:
            why = "; ".join(
                f"{o}: {v['skipped']}"
                for o, v in speed.get(_step(name), {}).items()
                if "skipped" in v
            )
            out.append([name, *["–"] * (len(origins) + 6), f"not run: {why or m['skipped']}"])
            continue
        per = [_f(m["by_origin"].get(o, {}).get("rmspe")) for o in origins]
        ratio = m.get("ratio_to_seasonal_naive_364")
        wall, peak = _timing(speed, name)
        holes = sum(m.get("fallback_rows", {}).values())
        if holes:
            note += f" ({holes:,} scored rows without its forecast: seasonal naive 364's)"
        if m.get("missing_origins"):
            note += f" (no forecast for {', '.join(m['missing_origins'])}: not pooled)"
        pooled = f"**{_f(m['rmspe'])}**" if "rmspe" in m else "–"
        out.append(
            [name, *per, pooled, _f(m.get("wmae")), _f(m.get("mae")), _f(ratio, 3), wall, peak,
             note]
        )  # fmt: skip
    return out


def _coverage(sf: dict[str, Any], origins: list[str]) -> list[str]:
    if "coverage_80" not in sf.get("pooled", {}):
        return ["salesflow's interval coverage: not measured (no intervals in its forecasts)."]
    per = "; ".join(
        f"{o}: {sf['by_origin'][o]['coverage_80']:.1%} / {sf['by_origin'][o]['coverage_95']:.1%}"
        for o in origins
        if o in sf["by_origin"]
    )
    p = sf["pooled"]
    width = (
        f" Mean width (hi - lo) {p['width_80']:,.0f} / {p['width_95']:,.0f}."
        if "width_80" in p
        else ""
    )
    return [
        f"salesflow's interval coverage on the scored rows (80 % / 95 % nominal): pooled "
        f"**{p['coverage_80']:.1%} / {p['coverage_95']:.1%}**; per origin {per}.{width} "
        "The bounds come from salesflow's own backtest on the data before each origin (its "
        "three backtest origins, 42 days apart, before it): the scored window never "
        "influences them."
    ]


def _verdict(methods: dict[str, Any]) -> list[str]:
    sf = methods.get("salesflow", {})
    if "rmspe" not in sf:
        return ["salesflow has no pooled score yet."]
    ahead = [m for m, v in methods.items() if m != "salesflow" and v.get("rmspe", 9) < sf["rmspe"]]
    goal = "meets" if sf["rmspe"] <= GOAL_RMSPE else "misses"
    return [
        f"Goal (issue #13): pooled RMSPE <= {GOAL_RMSPE} and ahead of every peer. salesflow "
        f"{sf['rmspe']:.4f}: {goal} the RMSPE goal; "
        + (f"behind {', '.join(ahead)}." if ahead else "ahead of every other method.")
    ]


def _machine(meta: dict[str, Any]) -> str:
    m, c = meta["machine"], meta.get("code", {})
    dirty = c.get("uncommitted") or []
    return (
        f"Run {m['date']} by `{meta['command']}` ({_f(meta.get('total_s'), 0)} s; steps run: "
        f"{', '.join(meta.get('steps_run', []))}); {m['cores']} cores ({m['cpu_model']}), "
        f"{m['memory_gb']} GB, 1-min load at start {m['load_average_1m_at_start']}; code "
        f"commit {c.get('commit')}"
        + (f" + {len(dirty)} uncommitted files" if dirty else "")
        + f" (digest {c.get('code_sha256')}). Forecasts of steps not rerun are the cached "
        "ones (their code: `code_by_step` in results.json)."
    )


def section(r: dict[str, Any]) -> list[str]:
    methods, meta = r["accuracy"]["rossmann"], r["accuracy"]["rossmann_meta"]
    origins, d = meta["origins"], meta["data"]
    head = ["method", *[f"RMSPE {o}" for o in origins], "pooled RMSPE", "pooled WMAE",
            "pooled MAE", "vs s-naive 364", "wall s / origin", "peak MB", "what"]  # fmt: skip
    counts = ", ".join(f"{o}: {n:,}" for o, n in meta["rows_by_origin"].items())
    out = [
        "## Rossmann (daily)",
        "",
        _machine(meta),
        "",
        f"Data: `{meta['path']}` — {d['rows']:,} rows, {d['stores']:,} stores, "
        f"{d['first_date']} .. {d['last_date']}. Origins (first forecast day) {', '.join(origins)}"
        f"; each method sees only the days before the origin and forecasts {meta['horizon']} "
        "days; the opening plan, promotions and holidays of those days are known ahead, so "
        "closed days are forecast 0 by every method and forecasts are clipped at 0. salesflow "
        f"was tuned on origin {meta['tuning_origin']} only; the other two are fresh for it.",
        "",
        f"Scored rows (the same for every method): open days with sales > 0 — {counts} "
        f"({meta['rows']:,} pooled). RMSPE = sqrt(mean(((y - f) / y)^2)); WMAE weighs "
        f"StateHoliday != 0 days x{meta['holiday_weight']:g}; MAE; all from `salesflow.metrics`. "
        "*pooled*: over the rows of all origins.",
        "",
    ]
    out += _table(head, _rows(r, origins))
    out += ["", *_coverage(methods.get("salesflow", {}), origins), "", *_verdict(methods), ""]
    lgbm = ", ".join(f"{k}={v}" for k, v in peers.LGBM_PARAMS.items())
    out += [
        "Peers' setup (fixed before any origin was scored): every store on the daily grid; "
        f"the 180 stores' 184-day gap (and one missing day) filled, for the peers' inputs "
        f"only, with the store's day 364 days earlier ({d['imputed_rows']:,} rows). "
        f"mlforecast: lags {peers.MLF_LAGS}, rolling means of lag 7 over 7 and 28 days and of "
        "the last 4 same weekdays, day of week / day / month / week of year, exogenous "
        f"{', '.join(peers.EXOG)} (known ahead), statics {', '.join(peers.STATIC)}, target "
        "log1p, trained on every day (closed days as 0, Open a feature; imputed rows weight 0), "
        f"recursive over 42 days; LightGBM {lgbm}. statsforecast: MSTL(season_length="
        f"{peers.MSTL_SEASONS}) per store on the daily sales with closed days as 0, n_jobs=2.",
        "",
    ]
    return out
