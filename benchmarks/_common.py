"""What every benchmark shares: the machine's description and measuring a step in a process
of its own (wall time, peak RSS, a time limit).

``run_measured`` starts ``python benchmarks/_worker.py TASK`` with JSON arguments; the
worker runs the task, adds ``ru_maxrss`` of itself and of its children (the RSS high-water
mark) and writes its result as JSON. Nothing happens at import time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Busy-waiting OpenMP threads (xgboost, lightgbm) make fits ~25x slower on a shared 2-core
# machine; the setting must be in the environment before those libraries load.
QUIET_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
}


def package_version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def describe_machine(packages: list[str]) -> dict[str, Any]:
    """Date, cores, memory, CPU model, platform, Python, the packages' versions, load."""
    cpu, mem_kb = "unknown", 0
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln)
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = int(next(ln for ln in meminfo if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024**2, 1),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {p: package_version(p) for p in packages},
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def peak_rss_mb() -> dict[str, float | None]:
    """RSS high-water marks (MB): this process's, and its waited-for children's.

    ``peak_mb`` is the kernel's per-process high-water mark ``VmHWM`` (/proc/self/status);
    ``getrusage(RUSAGE_SELF).ru_maxrss`` is reported as ``rusage_self_mb`` but is not used
    as the peak: Linux carries the *parent's* high-water mark into it across fork + exec,
    so every worker would report at least the orchestrator's size. ``children_peak_mb``
    (``RUSAGE_CHILDREN``, e.g. worker pools or a Prefect server) has the same inheritance
    from this process.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    hwm = None
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        hwm = int(next(ln for ln in status if ln.startswith("VmHWM")).split()[1]) / 1024
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "peak_mb": round(hwm if hwm is not None else own, 1),
        "rusage_self_mb": round(own, 1),
        "children_peak_mb": round(kids, 1),
    }


def run_measured(
    task: str,
    args: dict[str, Any],
    work: Path,
    timeout_s: float,
    label: str | None = None,
    worker: str = "_worker.py",
    prefix: str = "run_all",
) -> dict[str, Any]:
    """Run ``task`` in a fresh Python process (its own session), at most ``timeout_s`` s:
    ``benchmarks/<worker> task args-json out-json``; progress lines start ``[prefix]``.

    Returns the task's result plus ``wall_s``, ``peak_mb`` and ``children_peak_mb``; or
    ``{"skipped": reason, "wall_s": ...}`` when it timed out or failed (the log's tail).
    On time-out the whole process group is killed (worker pools, a Prefect server).
    """
    label = label or task
    work.mkdir(parents=True, exist_ok=True)
    out, log = work / f"{label}.json", work / f"{label}.log"
    out.unlink(missing_ok=True)
    text = json.dumps(args, default=str)
    cmd = [sys.executable, str(HERE / worker), task, text, str(out)]
    print(f"[{prefix}] {label}: started (limit {timeout_s:.0f} s)", flush=True)
    start = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, **QUIET_ENV},
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=HERE.parent,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            wall = round(time.perf_counter() - start, 1)
            print(f"[{prefix}] {label}: timed out after {wall} s", flush=True)
            return {"skipped": f"timed out: over the {timeout_s:.0f} s limit", "wall_s": wall}
    wall = round(time.perf_counter() - start, 2)
    if code != 0 or not out.exists():
        tail = [ln for ln in log.read_text().strip().splitlines() if ln.strip()][-3:]
        print(f"[{prefix}] {label}: failed (exit {code}): {tail}", flush=True)
        return {"skipped": f"failed (exit {code}): {' | '.join(tail)}", "wall_s": wall}
    result = json.loads(out.read_text())
    print(f"[{prefix}] {label}: {wall} s, peak {result.get('peak_mb')} MB", flush=True)
    return {**result, "wall_s": wall}


CODE_DIRS = ("salesflow", "features", "flows", "tasks", "configs")


def snapshot_code(root: Path, dest: Path) -> dict[str, Any]:
    """Copy the project's code (``CODE_DIRS``) to ``dest``, to be put first on the path of
    every measurement: the work tree may change while a long run goes on, and every step
    must measure the same code. Returns the commit, the uncommitted files among those
    folders and a digest of the copy."""
    shutil.rmtree(dest, ignore_errors=True)
    digest = hashlib.sha256()
    for name in CODE_DIRS:
        shutil.copytree(root / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(dest)).encode() + path.read_bytes())

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.rstrip() if done.returncode == 0 else ""

    status = git("status", "--porcelain", "--", *CODE_DIRS)
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "uncommitted": [ln[3:] for ln in status.splitlines()],
        "code_sha256": digest.hexdigest()[:16],
        "snapshot": str(dest),
    }


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
