"""Latency and throughput of ``salesflow serve``: ``GET /forecasts`` (one series) and
``POST /predict`` (one series, 39 weeks) at concurrency 1, 16 and 64 (issue #14).

Usage::

    python benchmarks/bench_api.py [--duration 10] [--concurrency 1 16 64]
        [--pg-url URL] [--url URL] [--no-write]

Without ``--url`` it makes the quick start's state in ``benchmarks/out/api/`` (its own
``paths.local_dir``): ``salesflow train`` and ``salesflow forecast`` on the synthetic data
with the dev settings (48 series, horizon 39) -- skipped when that folder already has a
champion and forecasts -- then starts ``salesflow serve`` on a free port, waits for
``/ready``, measures, and stops it. The warehouse is the quick start's SQLite file, or
PostgreSQL with ``--pg-url`` (table ``sales_forecasts_bench_api``). ``--url`` measures a
running service instead (its series are read from its ``/forecasts``).

Each case is an async httpx loop (no other dependency): ``concurrency`` clients send
requests back to back for ``--duration`` seconds after a warm-up; every request names one
series, taken in turn from all the service's series; ``GET /health`` (no work behind it) is
measured first, as the ceiling of uvicorn + FastAPI + this client on the machine, and
``POST /predict`` twice: plain, and with the issue's what-if override (markdown 1 doubled
in week 3). p50/p99
are over the successful requests, requests/s over the case's wall time. The client runs on
the same machine as the service (2 cores here) and takes CPU from it; the load average
before and after each case is recorded, because other work on the machine changes the
figures.

Writes the run into ``benchmarks/results.json`` as ``api.runs.sqlite`` (or
``api.runs.postgresql``, ``api.runs.url``; other runs and keys untouched) and renders the
"API" section of ``benchmarks/RESULTS.md`` from all the runs there (other sections
untouched; ``run_all.py`` keeps it through :func:`render_section`). ``--no-write`` prints
only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from _common import HERE, QUIET_ENV, describe_machine, write_json

WORK = HERE / "out" / "api"
PG_TABLE = "sales_forecasts_bench_api"
GOALS = {"forecasts_p99_ms": 25.0, "forecasts_rps": 200.0, "predict_p99_ms": 150.0}
PACKAGES = ["salesflow", "fastapi", "uvicorn", "starlette", "pydantic", "httpx", "xgboost"]
SECTION = "## API (salesflow serve)"
READY_TIMEOUT_S = 180
WARMUP_S = 2.0

Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


# --- the service ----------------------------------------------------------------------------


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _env(pg_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESFLOW_")}
    env.update(QUIET_ENV, SALESFLOW_ENV="dev", SALESFLOW_PATHS__LOCAL_DIR=str(WORK / "local"))
    if pg_url:
        env.update(SALESFLOW_WAREHOUSE_URL=pg_url, SALESFLOW_WAREHOUSE__TABLE=PG_TABLE)
    return env


def _run(args: list[str], env: dict[str, str], log: Path) -> float:
    """Run a salesflow command to completion (output to ``log``); its wall seconds."""
    print(f"[bench_api] {shlex.join(args[1:] and ['salesflow', *args[1:]])}", flush=True)
    start = time.perf_counter()
    with log.open("w") as sink:
        done = subprocess.run(args, env=env, cwd=HERE.parent, stdout=sink, stderr=sink)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"[bench_api] {' '.join(args[1:])} failed ({done.returncode}):\n{tail}")
    return round(time.perf_counter() - start, 1)


def _state(env: dict[str, str]) -> tuple[bool, bool]:
    """(a champion exists, forecasts exist) in the work folder / warehouse of ``env``."""
    code = (
        "from salesflow.config.settings import load_settings\n"
        "from salesflow.modelling.registry import get_alias_version\n"
        "from salesflow.serving.queries import latest_origin\n"
        "s = load_settings()\n"
        "mv = get_alias_version(s.tracking_uri, s.model.name, s.mlflow.champion_alias)\n"
        "print(mv is not None, mv is not None and latest_origin(s) is not None)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=HERE.parent, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"[bench_api] reading the state failed:\n{done.stderr[-2000:]}")
    champion, forecasts = done.stdout.split()[-2:]
    return champion == "True", forecasts == "True"


def prepare_state(pg_url: str | None, retrain: bool) -> dict[str, Any]:
    """The quick start's champion and forecasts in :data:`WORK` (each reused when there;
    with ``--pg-url`` the forecasts are written to PostgreSQL by the same champion)."""
    WORK.mkdir(parents=True, exist_ok=True)
    env = _env(pg_url)
    champion, forecasts = _state(env)
    out: dict[str, Any] = {"reused_champion": champion and not retrain}
    if retrain or not champion:
        out["train_s"] = _run([_script("salesflow"), "train"], env, WORK / "train.log")
    out["reused_forecasts"] = forecasts and not retrain and champion
    if not out["reused_forecasts"]:
        out["forecast_s"] = _run([_script("salesflow"), "forecast"], env, WORK / "forecast.log")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(pg_url: str | None) -> tuple[subprocess.Popen[bytes], str, float]:
    """``salesflow serve`` on a free port, waited for until ``/ready`` answers 200."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (WORK / "serve.log").open("w")
    cmd = [_script("salesflow"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--no-access-log", "--log-level", "warning"]  # a log line per request costs CPU
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=_env(pg_url), cwd=HERE.parent, stdout=log, stderr=log, start_new_session=True
    )
    while time.perf_counter() - start < READY_TIMEOUT_S:
        if proc.poll() is not None:
            raise SystemExit(f"[bench_api] salesflow serve exited ({proc.returncode}): {log.name}")
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return proc, url, round(time.perf_counter() - start, 1)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_service(proc)
    raise SystemExit(f"[bench_api] {url}/ready did not answer 200 in {READY_TIMEOUT_S} s")


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# --- the requests ---------------------------------------------------------------------------


def list_series(url: str) -> list[dict[str, str]]:
    """The series keys of the service's latest forecasts (every page of ``/forecasts``)."""
    seen: dict[str, dict[str, str]] = {}
    params: dict[str, Any] = {"limit": 5000}
    with httpx.Client(base_url=url, timeout=60) as client:
        while True:
            resp = client.get("/forecasts", params=params)
            resp.raise_for_status()
            body = resp.json()
            for row in body["rows"]:
                seen.setdefault(row["unique_id"], row["series_keys"])
            if not body.get("next_cursor"):
                break
            params["after"] = body["next_cursor"]
    if not seen:
        raise SystemExit(f"[bench_api] {url}/forecasts has no rows: run salesflow forecast")
    return list(seen.values())


def health_request() -> Request:
    """The baseline: no work behind it, so its ceiling is uvicorn + FastAPI + this client."""

    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:  # noqa: ARG001
        return await client.get("/health")

    return send


def forecasts_request(series: list[dict[str, str]]) -> Request:
    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get("/forecasts", params=series[i % len(series)])

    return send


def predict_request(series: list[dict[str, str]]) -> Request:
    """One series per request, every horizon of the champion (39 weeks with the dev
    settings), no overrides (answered from the warm whole-panel forecast)."""

    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post("/predict", json={"series": [series[i % len(series)]]})

    return send


def whatif_request(series: list[dict[str, str]]) -> Request:
    """The issue's what-if: markdown 1 doubled in week 3. With an override the service
    forecasts the series (and the peers its features read) from their history; without
    one it answers from the champion's whole-panel forecast, made once at startup."""

    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {
            "series": [series[i % len(series)]],
            "overrides": [{"covariate": "markdown1", "horizon": 3, "multiply": 2.0}],
        }
        return await client.post("/predict", json=body)

    return send


# --- measuring ------------------------------------------------------------------------------


def _percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of ascending values."""
    rank = max(1, min(len(sorted_ms), round(q / 100 * len(sorted_ms) + 0.5)))
    return sorted_ms[rank - 1]


async def _loop(
    client: httpx.AsyncClient,
    send: Request,
    counter: list[int],
    until: float,
    latencies: list[float],
    failures: list[str],
) -> None:
    while time.perf_counter() < until:
        i = counter[0]
        counter[0] += 1
        start = time.perf_counter()
        try:
            resp = await send(client, i)
            ok = resp.status_code == 200
            why = f"{resp.status_code} {resp.text[:200]}"
        except httpx.HTTPError as exc:
            ok, why = False, repr(exc)
        elapsed = time.perf_counter() - start
        if ok:
            latencies.append(elapsed * 1000)
        else:
            failures.append(why)


async def _measure(url: str, send: Request, concurrency: int, duration: float) -> dict[str, Any]:
    # Idle connections expire before uvicorn's 5 s keep-alive timeout closes them: reusing
    # one the server is closing fails with ReadError (the last requests of the warm-up can
    # take seconds at concurrency 64 while other connections wait idle).
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        counter = [0]
        until = time.perf_counter() + WARMUP_S
        await asyncio.gather(
            *(_loop(client, send, counter, until, [], []) for _ in range(concurrency))
        )
        latencies: list[float] = []
        failures: list[str] = []
        start = time.perf_counter()
        until = start + duration
        await asyncio.gather(
            *(_loop(client, send, counter, until, latencies, failures) for _ in range(concurrency))
        )
        wall = time.perf_counter() - start
    ms = sorted(latencies)
    out: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": len(ms),
        "errors": len(failures),
        "wall_s": round(wall, 2),
        "rps": round(len(ms) / wall, 1),
    }
    if ms:
        out.update(
            p50_ms=round(_percentile(ms, 50), 1),
            p90_ms=round(_percentile(ms, 90), 1),
            p99_ms=round(_percentile(ms, 99), 1),
            max_ms=round(ms[-1], 1),
        )
    if failures:
        out["first_error"] = failures[0]
    return out


def measure(url: str, send: Request, concurrency: int, duration: float) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)
    out = asyncio.run(_measure(url, send, concurrency, duration))
    out.update(load_1m_before=load_before, load_1m_after=round(os.getloadavg()[0], 2))
    return out


def judge(cases: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The issue's goals against the measured cases."""
    f = [c for c in cases["forecasts"].values() if "p99_ms" in c and not c["errors"]]
    p = [c for c in cases["predict"].values() if "p99_ms" in c and not c["errors"]]
    w = [c for c in cases.get("whatif", {}).values() if "p99_ms" in c and not c["errors"]]
    both = [
        c["concurrency"]
        for c in f
        if c["p99_ms"] <= GOALS["forecasts_p99_ms"] and c["rps"] >= GOALS["forecasts_rps"]
    ]
    return {
        "forecasts_p99_and_rps_met_at": both,
        "forecasts_goal_met": bool(both),
        "whatif_p99_met_at": [
            c["concurrency"] for c in w if c["p99_ms"] <= GOALS["predict_p99_ms"]
        ],
        "predict_p99_met_at": [
            c["concurrency"] for c in p if c["p99_ms"] <= GOALS["predict_p99_ms"]
        ],
    }


# --- reporting ------------------------------------------------------------------------------


def _cell(case: dict[str, Any], key: str) -> str:
    v = case.get(key)
    return "n/a" if v is None else f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"


def _code(run: dict[str, Any]) -> str:
    code = run.get("code") or {}
    dirty = code.get("uncommitted") or []
    extra = f" + {len(dirty)} uncommitted file(s): {', '.join(dirty[:5])}" if dirty else ""
    return f"{code.get('commit')}{extra}"


def render_run(run: dict[str, Any]) -> list[str]:
    """The lines of one run (a warehouse) of the API section."""
    m, setup = run["machine"], run["setup"]
    lines = [
        f"### {setup['warehouse']}",
        "",
        f"`{run['command']}` on {m['date']}: {m['cores']} cores, {m['cpu_model']}, "
        f"Python {m['python']}, fastapi {m['packages'].get('fastapi')}, uvicorn "
        f"{m['packages'].get('uvicorn')}. Service: {setup['service']}; "
        f"{setup['model']}, {setup['series']} series, horizon {setup['horizon']}; "
        f"{run['duration_s']:g} s per case. Code: commit {_code(run)}.",
        "",
        "| request | concurrency | requests | req/s | p50 ms | p90 ms | p99 ms | max ms "
        "| errors | load 1m before / after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    names = {
        "health": "GET /health (baseline)",
        "forecasts": "GET /forecasts (1 series)",
        "predict": "POST /predict (1 series)",
        "whatif": "POST /predict, what-if (1 series)",
    }
    for kind, by_c in run["cases"].items():
        for case in by_c.values():
            cells = [_cell(case, k) for k in ("requests", "rps", "p50_ms", "p90_ms")]
            cells += [_cell(case, k) for k in ("p99_ms", "max_ms", "errors")]
            load = f"{case['load_1m_before']} / {case['load_1m_after']}"
            lines.append(
                f"| {names[kind]} | {case['concurrency']} | {' | '.join(cells)} | {load} |"
            )
    g, v = run["goals"], run["verdict"]
    met = ", ".join(str(c) for c in v["forecasts_p99_and_rps_met_at"]) or "none"
    pmet = ", ".join(str(c) for c in v["predict_p99_met_at"]) or "none"
    wmet = ", ".join(str(c) for c in v.get("whatif_p99_met_at", [])) or "none"
    lines += [
        "",
        f"Goals (issue #14): `/forecasts` p99 <= {g['forecasts_p99_ms']:g} ms at >= "
        f"{g['forecasts_rps']:g} req/s: met at concurrency {met}; `/predict` p99 <= "
        f"{g['predict_p99_ms']:g} ms: met at concurrency {pmet} (what-if: {wmet}).",
    ]
    if run.get("notes"):
        lines += ["", *[f"- {n}" for n in run["notes"]]]
    return [*lines, ""]


def render_section(api: dict[str, Any]) -> str:
    """The RESULTS.md section of ``api`` (results.json's ``api``: one run per warehouse)."""
    lines = [
        SECTION,
        "",
        "`salesflow serve` on the quick start's state (synthetic data, dev settings), measured "
        "by `benchmarks/bench_api.py`: async httpx clients on the same machine send requests "
        "back to back after a "
        f"{WARMUP_S:g} s warm-up; each request names one series (in turn over all of them); "
        "latency over the successful requests. The machine is shared: the 1-minute load "
        "average before and after each case is in the table (2 cores: a load above 2 means "
        "the service waited for CPU). `GET /health` does no work: its rate is the ceiling of "
        "uvicorn + FastAPI + this client here. `POST /predict` without overrides is cut from "
        "the champion's whole-panel forecast, made once at startup; the what-if rows double "
        "markdown 1 in week 3, so the service forecasts the series and the peers its features "
        "read from their history.",
        "",
    ]
    for run in api.get("runs", {}).values():
        lines += render_run(run)
    return "\n".join(lines).rstrip("\n") + "\n"


def replace_section(markdown: str, section: str) -> str:
    """``markdown`` with its API section replaced by ``section`` (inserted before "## Notes",
    or at the end, when absent); every other section unchanged."""
    lines = markdown.rstrip("\n").split("\n")
    if SECTION in lines:
        start = lines.index(SECTION)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        rest = lines[end:]
        return (
            "\n".join([*lines[:start], *section.rstrip("\n").split("\n"), "", *rest]).rstrip("\n")
            + "\n"
        )
    at = lines.index("## Notes") if "## Notes" in lines else len(lines)
    new = [*lines[:at], *([""] if lines[:at] and lines[at - 1] else []), *section.split("\n")]
    return "\n".join([*new, *lines[at:]]).rstrip("\n") + "\n"


def write_results(label: str, run: dict[str, Any]) -> None:
    """``run`` as ``api.runs[label]`` of results.json (other runs and keys kept) and the
    API section of RESULTS.md rendered again."""
    results = HERE / "results.json"
    data = json.loads(results.read_text()) if results.exists() else {}
    api = data.setdefault("api", {})
    api.setdefault("runs", {})[label] = run
    write_json(results, data)
    md = HERE / "RESULTS.md"
    md.write_text(replace_section(md.read_text() if md.exists() else "", render_section(api)))
    print(f"[bench_api] wrote api.runs.{label} into {results} and {md}")


def code_state() -> dict[str, Any]:
    """The commit and the uncommitted files of the code the service runs (the checkout is
    shared: what was measured may be ahead of the commit)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    status = git("status", "--porcelain", "--", "salesflow", "features", "configs")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "uncommitted": [ln[3:] for ln in status.splitlines()],
    }


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="measure this running service (default: start one)")
    p.add_argument("--pg-url", help="warehouse on PostgreSQL (default: the quick start's SQLite)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per case")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--retrain", action="store_true", help="train and forecast again")
    p.add_argument("--no-write", action="store_true", help="print, do not write the results")
    p.add_argument("--note", action="append", default=[], help="a note for RESULTS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    machine = describe_machine(PACKAGES)
    code = code_state()
    setup: dict[str, Any] = {
        "warehouse": f"Service at {args.url}" if args.url else "SQLite warehouse (quick start)"
    }
    proc = None
    url = args.url
    if url is None:
        setup.update(prepare_state(args.pg_url, args.retrain))
        if args.pg_url:
            setup["warehouse"] = f"PostgreSQL warehouse (table {PG_TABLE})"
        proc, url, ready_s = start_service(args.pg_url)
        setup.update(
            service="salesflow serve --no-access-log (started here, one uvicorn process)",
            ready_s=ready_s,
        )
    else:
        setup["service"] = "given by --url"
    try:
        series = list_series(url)
        info = httpx.get(f"{url}/model/info", timeout=30).json()
        setup.update(series=len(series), horizon=info.get("horizon"))
        setup["model"] = f"{info.get('name')} version {info.get('version')}"
        requests = {
            "health": health_request(),
            "forecasts": forecasts_request(series),
            "predict": predict_request(series),
            "whatif": whatif_request(series),
        }
        cases: dict[str, dict[str, dict[str, Any]]] = {}
        for kind, send in requests.items():
            cases[kind] = {}
            for c in args.concurrency:
                case = measure(url, send, c, args.duration)
                cases[kind][str(c)] = case
                print(f"[bench_api] {kind} x{c}: {json.dumps(case)}", flush=True)
    finally:
        if proc is not None:
            stop_service(proc)
    command = "python benchmarks/bench_api.py " + shlex.join(argv or sys.argv[1:])
    run = {
        "command": command.strip(),
        "machine": machine,
        "code": code,
        "setup": setup,
        "duration_s": args.duration,
        "cases": cases,
        "goals": GOALS,
        "verdict": judge(cases),
        "notes": args.note,
    }
    label = "url" if args.url else "postgresql" if args.pg_url else "sqlite"
    if not args.no_write:
        write_results(label, run)
    print("\n".join(render_run(run)))
    return run


if __name__ == "__main__":
    main()
