"""Flow-level scale benchmark (issue #15): salesflow's own ``batch-forecast`` flow on Dask.

    .venv/bin/python benchmarks/bench_flow_scale.py --series 20000
    .venv/bin/python benchmarks/bench_flow_scale.py --series 100000
    .venv/bin/python benchmarks/bench_flow_scale.py                 # 1,000,000 series x 60 weeks

What ``bench_scale.py`` does not measure: the real flow, with a real Prefect server, the
``DaskTaskRunner`` and a task run per partition and shard. In this process (the flow's
process, the "driver"):

1. a Prefect server (``prefect server start``) on a free port with its own PREFECT_HOME and
   SQLite database, a child of this process;
2. a champion trained by the ``train-forecaster`` flow (dev settings, 10 stores x 100
   departments of the same synthetic family and the same weeks; MLflow is a SQLite registry
   under ``--local-dir``, reused by later runs of the same ``--periods``). 60 weeks are too
   short for dev's backtest (52 + 1 + 39 + 2 x 13 periods), so the training run uses
   ``backtest.n_origins: 1`` and ``model.min_train_history: periods - 1 - horizon``; it is
   forced to champion (its backtest on so little data decides nothing here);
3. ``batch_forecast_flow`` with ``compute.engine: dask`` (``ingest: workers``: the synthetic
   panel is ``--parts`` sub-panels generated on the workers) on a LocalCluster of
   ``--workers`` processes x 1 thread, writing to fresh tables in PostgreSQL (dropped at the
   end).

Measured: the flow's wall time; per stage, from the server's task runs (count, sum and max
of their durations, first start -> last end); every process's peak RSS (psutil every 0.5 s
over this process's tree: driver, Dask workers, Prefect server); rows written (the flow's
result and ``SELECT count(*)``); the commit's rows/s; the load average. Results merge into
``benchmarks/flow_scale.json``; ``benchmarks/FLOW_SCALE.md`` is rebuilt from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import QUIET_ENV, describe_machine  # noqa: E402
from _scale_dask import PeakSampler  # noqa: E402
from _scale_dask import _role as dask_role  # noqa: E402
from bench_scale import PACKAGES, PG_URL, shape_of, snapshot_head  # noqa: E402

RESULTS = HERE / "flow_scale.json"
REPORT = HERE / "FLOW_SCALE.md"
WORK = Path("/tmp/flow1m")
STAGES = (
    "read-partition",
    "index-partition",
    "merge-indexes",
    "plan-shards",
    "shard-data",
    "validate-shard",
    "validation-verdict",
    "shard-features",  # runs before the features were recomputed per pass (stay readable)
    "share-shard",
    "shard-group-sums",
    "group-means",
    "forecast-shard",
    "commit-forecasts",
)
TRAIN_SHAPE = (10, 100)  # stores x departments of the champion's training panel (1,000 series)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def log(msg: str) -> None:
    print(f"[flow-scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- memory and load -----------------------------------------------------------------------


def _role(p: Any) -> str:
    """``_scale_dask``'s roles, and the Prefect server; other processes by command line."""
    role = dask_role(p)
    if role != "other":
        return role
    try:
        cmd = " ".join(p.cmdline())
    except Exception:  # noqa: BLE001 - a process gone between listing and asking
        return "other"
    if "prefect" in cmd and "server" in cmd or "uvicorn" in cmd:
        return "prefect-server"
    return "other" if "resource_tracker" in cmd else "other: " + cmd[:60]


class Sampler(PeakSampler):
    """Peak RSS of this process and every descendant (psutil, every ``interval`` s), each
    named by the flow's roles, and the 1-minute load average every 30 s."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(interval, role_of=_role, load_every=30)


# --- the Prefect server ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``prefect server start`` on a free port, its home and SQLite database in ``home``."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SALESFLOW_"))
        }
        self.env.update(
            QUIET_ENV,
            PREFECT_HOME=str(home / "prefect-home"),
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PYTHONUNBUFFERED="1",
        )
        self.log = home / "server.log"
        prefect = Path(sys.executable).parent / "prefect"
        cmd = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("w") as sink:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=sink, stderr=subprocess.STDOUT, cwd=home,
                start_new_session=True,
            )  # fmt: skip

    def wait_healthy(self, timeout: float = 120) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited {self.proc.returncode}: {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server did not answer {self.url}/health in {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


# --- the champion ------------------------------------------------------------------------------


def train_champion(local_dir: Path, periods: int) -> dict[str, Any]:
    """The ``train-forecaster`` flow on a 10 x 100 panel of ``periods`` weeks (dev
    settings), once per ``local_dir``; forced to champion. Returns its result (cached)."""
    marker = local_dir / "champion.json"
    if marker.exists():
        out = json.loads(marker.read_text())
        out["reused"] = True
        return out
    from flows.training import training_flow
    from salesflow.config.settings import load_settings

    horizon = load_settings("dev").model.horizon
    stores, depts = TRAIN_SHAPE
    overrides = {
        "paths": {"local_dir": str(local_dir)},
        "data": {"synthetic": {"n_stores": stores, "n_depts": depts, "periods": periods}},
        "model": {"min_train_history": min(52, periods - 1 - horizon)},
        "backtest": {"n_origins": 1},
    }
    t0 = time.perf_counter()
    res = training_flow(
        env="dev", overrides=overrides, force_champion=True, actor="bench_flow_scale",
        force_reason="benchmark champion (flow-level scale run)",
    )  # fmt: skip
    out = {
        "version": res["version"],
        "action": res["action"],
        "train_s": round(time.perf_counter() - t0, 1),
        "panel": f"{stores} stores x {depts} departments x {periods} weeks (dev settings)",
        "overrides": overrides,
    }
    local_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(out, indent=2, default=str))
    out["reused"] = False
    return out


# --- the stages, from the server's task runs ----------------------------------------------------


def _stage_of(name: str) -> str:
    for stage in sorted(STAGES, key=len, reverse=True):
        if name == stage or name.startswith(stage + "-"):
            return stage
    if name.startswith("score-partitions"):  # the subflow's run in its parent
        return "(subflow) score-partitions"
    head, _, tail = name.rpartition("-")  # Prefect's default run name: <task>-<3 hex>
    return head if head and len(tail) == 3 and all(c in "0123456789abcdef" for c in tail) else name


def task_run_stages(since: dt.datetime, wait_s: float = 90) -> dict[str, Any]:
    """Task runs started after ``since``, grouped per stage (task name prefix): count, sum and
    max of durations (end - start), first start -> last end. Waits (up to ``wait_s``) for
    the server to record every run's final state (it records them from events)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    flt = TaskRunFilter(start_time=TaskRunFilterStartTime(after_=since))
    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            runs, offset = [], 0
            while True:
                page = client.read_task_runs(task_run_filter=flt, limit=200, offset=offset)
                runs += page
                offset += len(page)
                if len(page) < 200:
                    break
            pending = [r for r in runs if not (r.state and r.state.is_final()) or not r.end_time]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(3)
    stages: dict[str, dict[str, Any]] = {}
    states: dict[str, int] = {}
    for r in runs:
        sname = r.state.name if r.state else "?"
        states[sname] = states.get(sname, 0) + 1
        st = stages.setdefault(_stage_of(r.name), {"runs": []})
        st["runs"].append((r.start_time, r.end_time, sname, r.run_count))
    out: dict[str, Any] = {}
    for name, st in stages.items():
        done = [(s, e) for s, e, *_ in st["runs"] if s and e]
        durs = [(e - s).total_seconds() for s, e in done]
        out[name] = {
            "count": len(st["runs"]),
            "sum_s": round(sum(durs), 2),
            "max_s": round(max(durs), 2) if durs else None,
            "first_start": min(s for s, _ in done).isoformat() if done else None,
            "last_end": max(e for _, e in done).isoformat() if done else None,
            "span_s": round((max(e for _, e in done) - min(s for s, _ in done)).total_seconds(), 2)
            if done
            else None,
            "not_final": len(st["runs"]) - len(done),
            "reruns": sum(max(0, (rc or 1) - 1) for *_, rc in st["runs"]),
        }
    order = {s: i for i, s in enumerate(STAGES)}
    ordered = dict(
        sorted(out.items(), key=lambda kv: (order.get(kv[0], -1), kv[1]["first_start"] or ""))
    )
    return {"stages": ordered, "task_runs": len(runs), "states": states}


# --- the warehouse ---------------------------------------------------------------------------


def count_and_drop(pg_url: str, table: str, runs: str, tag: str) -> tuple[int | None, list[str]]:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    count = None
    try:
        with engine.begin() as conn:
            try:
                count = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
            except sa.exc.ProgrammingError:
                count = None
        with engine.begin() as conn:
            names = [
                r[0]
                for r in conn.execute(
                    sa.text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                        "AND tablename LIKE :pattern"
                    ),
                    {"pattern": f"flow_scale_{tag}%"},
                )
            ]
            for name in names:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
    finally:
        engine.dispose()
    return count, names


# --- one run --------------------------------------------------------------------------------------


def start_run(
    work: Path, label: str, a: argparse.Namespace, command: str
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A run's folder under ``work``, the machine's description and the result so far
    (series, periods, command, load, code snapshot); this process and the Dask workers it
    spawns import the snapshot (``PYTHONPATH``), quietly."""
    home = work / "runs" / f"{label}-{time.strftime('%H%M%S')}"
    home.mkdir(parents=True, exist_ok=True)
    machine = describe_machine(PACKAGES + ["prefect", "prefect-dask"])
    result: dict[str, Any] = {"series": a.series, "periods": a.periods, "command": command}
    result["load_1m_start"] = _load()
    result["code"] = code = snapshot_head(work / "code")
    sys.path.insert(0, code["snapshot"])  # this process, and the spawned Dask workers
    os.environ["PYTHONPATH"] = code["snapshot"]
    os.environ.update(QUIET_ENV)
    return home, machine, result


def run(a: argparse.Namespace, command: str) -> dict[str, Any]:
    label = f"flow-{a.series}-{a.periods}w" + (f"-{a.tag}" if a.tag else "")
    home, machine, result = start_run(WORK, label, a, command)
    os.environ.pop("SALESFLOW_WAREHOUSE_URL", None)  # training's lock: the SQLite warehouse
    stores, depts = shape_of(a.series)
    tag = uuid.uuid4().hex[:6]
    table, runs_table = f"flow_scale_{tag}", f"flow_scale_{tag}_runs"
    local_dir = Path(a.local_dir) / f"{a.periods}w"
    with Sampler() as sampler:
        server = Server(home)
        try:
            result["server_start_s"] = round(server.wait_healthy(), 1)
            log(f"prefect server at {server.url} (log {server.log})")
            os.environ["PREFECT_API_URL"] = server.url
            os.environ["PREFECT_HOME"] = str(home / "prefect-home")
            result["champion"] = train_champion(local_dir, a.periods)
            log(f"champion: {result['champion']}")
            before = sampler.mark()
            os.environ["SALESFLOW_WAREHOUSE_URL"] = a.pg_url  # read by the workers too
            overrides = {
                "paths": {"local_dir": str(local_dir)},
                "data": {
                    "synthetic": {
                        "n_stores": stores, "n_depts": depts, "periods": a.periods,
                        "parts": a.parts,
                    }
                },
                "warehouse": {"table": table, "runs_table": runs_table},
                "compute": {
                    "engine": "dask", "ingest": "workers", "address": None,
                    "n_workers": a.workers, "threads_per_worker": 1,
                    "memory_limit": a.memory_limit, "shard_series": a.shard_series,
                },
            }  # fmt: skip
            result["overrides"] = overrides
            from flows.batch_forecast import batch_forecast_flow

            log(f"batch-forecast: {stores} stores x {depts} depts x {a.periods} weeks")
            since = dt.datetime.now(dt.UTC)
            result["flow_start"] = since.isoformat(timespec="seconds")
            t0 = time.perf_counter()
            try:
                res = batch_forecast_flow(env="dev", overrides=overrides)
                result["flow_result"] = {
                    k: v for k, v in res.items() if k not in ("series_removed", "series_kept")
                }
            except BaseException as exc:  # noqa: BLE001 - the figures so far are still wanted
                result["error"] = f"{type(exc).__name__}: {exc}"
                log(f"flow failed: {result['error']}")
            result["flow_wall_s"] = round(time.perf_counter() - t0, 1)
            result["load_1m_end"] = _load()
            log(f"flow done in {result['flow_wall_s']} s; reading task runs")
            result.update(task_run_stages(since))
            result["peaks_flow_mb"] = peaks_since(sampler, before)
        finally:
            (home / "partial.json").write_text(json.dumps(result, indent=2, default=str))
            try:
                count, dropped = count_and_drop(a.pg_url, table, runs_table, tag)
                result["rows_in_table"], result["tables_dropped"] = count, dropped
            except Exception as exc:  # noqa: BLE001 - reported, the figures are kept
                result["cleanup_error"] = f"{type(exc).__name__}: {exc}"
            server.stop()
    result["peaks_mb"] = sampler.by_role()
    result["load_samples"] = sampler.loads
    result["loads_max"] = max((x for _, x in sampler.loads), default=None)
    commit = result.get("stages", {}).get("commit-forecasts", {})
    rows = (result.get("flow_result") or {}).get("rows_written")
    if rows and commit.get("max_s"):
        result["commit_rows_per_s"] = round(rows / commit["max_s"])
    result["settings"] = {
        "series": a.series, "periods": a.periods, "parts": a.parts, "workers": a.workers,
        "memory_limit": a.memory_limit, "shard_series": a.shard_series,
        "shape": f"{stores} stores x {depts} departments", "env": "dev",
    }  # fmt: skip
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["label"] = label
    merge(label, result, machine)
    write_report()
    return result


# --- results and report ----------------------------------------------------------------------


def merge(label: str, result: dict[str, Any], machine: dict[str, Any]) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    data["runs"][label] = {**result, "machine": machine}
    RESULTS.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _mb(values: list[float] | None) -> str:
    if not values:
        return "-"
    return ", ".join(f"{v / 1024:.2f} GB" if v >= 1024 else f"{v:.0f} MB" for v in values)


def write_report() -> None:
    data = json.loads(RESULTS.read_text())
    out = [
        "# Flow-level scale: `batch-forecast` on Dask (issue #15)",
        "",
        "Written by `benchmarks/bench_flow_scale.py` from `benchmarks/flow_scale.json`: the",
        "real flow (a Prefect server, `DaskTaskRunner`, task runs per partition and shard),",
        "`compute.ingest: workers`, synthetic panel generated on the workers in",
        "`data.synthetic.parts` sub-panels, rows staged and committed once into PostgreSQL.",
        "Stage times come from the server's task runs (sum and max of their durations,",
        "first start -> last end); peaks are each process's RSS polled every 0.5 s.",
        "",
    ]
    for label, r in data["runs"].items():
        s, m = r["settings"], r["machine"]
        fr = r.get("flow_result") or {}
        out += [f"## {label}", ""]
        out += [f"`{r['command']}`", ""]
        out += [
            f"- {s['series']:,} series ({s['shape']}) x {s['periods']} weeks; {s['parts']} parts;"
            f" {s['workers']} workers x 1 thread, memory_limit {s['memory_limit']};"
            f" shard_series {s['shard_series']:,}; settings env {s['env']}",
            f"- **flow wall time {r.get('flow_wall_s')} s**"
            + (f" (**failed**: {r['error']})" if r.get("error") else ""),
            f"- rows written {fr.get('rows_written', '-'):,}" if fr else "- rows written -",
            f"- rows in the table (`SELECT count(*)`) {r.get('rows_in_table')}",
            f"- commit rows/s {r.get('commit_rows_per_s', '-')}",
            f"- series forecast {fr.get('series', '-')}; task runs {r.get('task_runs')};"
            f" states {r.get('states')}",
            f"- load average (1 min) at start {r.get('load_1m_start')}, end"
            f" {r.get('load_1m_end')}, max sampled {r.get('loads_max')}",
            f"- champion: {(r.get('champion') or {}).get('panel')}, version"
            f" {(r.get('champion') or {}).get('version')}",
            f"- code: commit {r['code']['commit']} (git archive HEAD snapshot)",
            "",
            "| stage | task runs | sum s | max s | first start -> last end s |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        out += stage_rows(r.get("stages"))
        out += ["", "| process | peak RSS |", "| --- | --- |"]
        out += peak_rows(r.get("peaks_mb"))
        out += [
            "",
            "The LocalCluster's nannies run inside the driver process (no process of their own).",
            "",
            machine_line(m),
            "",
        ]
    REPORT.write_text("\n".join(out))


def stage_rows(stages: dict[str, Any] | None) -> list[str]:
    """The stage table's rows (count, sum, max, first start -> last end) after its header."""
    return [
        f"| {name} | {st['count']} | {st['sum_s']} | {st['max_s']} | {st['span_s']} |"
        for name, st in (stages or {}).items()
    ]


def peak_rows(peaks: dict[str, list[float]] | None) -> list[str]:
    """One ``| role | peaks |`` row per process role."""
    return [f"| {role} | {_mb(vals)} |" for role, vals in (peaks or {}).items()]


def machine_line(m: dict[str, Any]) -> str:
    """The machine's description (``describe_machine``) as one report line."""
    return (
        f"Machine: {m['cores']} cores, {m['memory_gb']} GB, {m['cpu_model']}, {m['platform']},"
        f" Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + f"; OMP_WAIT_POLICY={m['omp_wait_policy']}; date {m['date']}"
    )


def peaks_since(sampler: Sampler, before: dict[int, float]) -> dict[str, list[float]]:
    """Per role, the peaks of the processes that started or grew since ``before``
    (``sampler.mark()``), largest first."""
    return {
        role: sorted(
            (e["peak_mb"] for pid, e in sampler.peaks.items() if e["role"] == role
             and (pid not in before or e["peak_mb"] > before[pid])),
            reverse=True,
        )
        for role in {e["role"] for e in sampler.peaks.values()}
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=1_000_000)
    p.add_argument("--periods", type=int, default=60)
    p.add_argument("--parts", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="7GB")
    p.add_argument("--shard-series", type=int, default=20_000)
    p.add_argument("--pg-url", default=PG_URL)
    p.add_argument("--local-dir", default=str(WORK / "local"), help="champion's MLflow registry")
    p.add_argument("--tag", default="")
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    if a.report_only:
        write_report()
        return
    command = ".venv/bin/python benchmarks/bench_flow_scale.py " + shlex.join(argv)
    r = run(a, command.strip())
    log(
        f"{r['label']}: flow {r.get('flow_wall_s')} s, rows {r.get('rows_in_table')}, "
        f"peaks {r.get('peaks_mb')}, error {r.get('error')}"
    )


if __name__ == "__main__":
    main()
