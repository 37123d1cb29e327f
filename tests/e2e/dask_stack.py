"""A real Dask cluster on this machine for the e2e tests: one ``dask scheduler`` and two
``dask worker`` processes, started with the commands of the README's "Scaling out" section
(see DASK_COMMANDS), each its own process group so that a test can SIGKILL one worker.

The workers run Prefect task runs (prefect-dask's ``DaskTaskRunner`` ships the tasks to
them), so their environment names the session's Prefect server (``PREFECT_API_URL``: a
worker cannot reach a flow's temporary server), the warehouse, and the checkout the
``flows``/``tasks``/``features`` modules come from.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .procs import REPO_ROOT, Background, Processes, clean_env, free_port, log_tail

# As a user types them on one machine (README "Scaling out"); :func:`dask_args` swaps in
# this session's free port and scratch folder.
DASK_COMMANDS = {
    "scheduler": (
        "dask scheduler --host 127.0.0.1 --port 8786 --dashboard-address 127.0.0.1:8787 "
        "--scheduler-file scheduler.json"
    ),
    "worker": (
        "dask worker tcp://127.0.0.1:8786 --nworkers 1 --nthreads 1 --memory-limit 2GB "
        "--name {name}"
    ),
}
README_DASK_PORT = "8786"
README_DASHBOARD_PORT = "8787"  # its HTTP server (/health, /metrics; the dashboard with bokeh)
WORKER_NAMES = ("dask-worker-a", "dask-worker-b")
SCHEDULER_START_TIMEOUT_S = 60
WORKERS_START_TIMEOUT_S = 90


def dask_args(key: str, port: int, http_port: int = 0, **fmt: str) -> list[str]:
    """A DASK_COMMANDS entry as arguments: this session's ports, the venv's ``dask``."""
    args = []
    for arg in shlex.split(DASK_COMMANDS[key].format(**fmt)):
        arg = arg.replace(README_DASK_PORT, str(port))
        args.append(arg.replace(README_DASHBOARD_PORT, str(http_port)))
    local = Path(sys.executable).parent / "dask"
    args[0] = str(local) if local.exists() else shutil.which("dask") or "dask"
    return args


@dataclass
class DaskCluster:
    """The scheduler's address and the processes; workers by name."""

    address: str
    port: int
    env: dict[str, str]
    folder: Path
    processes: Processes
    scheduler: Background
    workers: dict[str, Background] = field(default_factory=dict)

    def start_worker(self, name: str) -> Background:
        """``dask worker <address> --nworkers 1 --nthreads 1`` named ``name``."""
        bg = self.processes.start(
            f"dask worker {name}",
            dask_args("worker", self.port, name=name),
            env=self.env,
            cwd=REPO_ROOT,
            log=self.folder / f"{name}.log",
            stop_signal=signal.SIGTERM,
            grace_s=15.0,
        )
        self.workers[name] = bg
        return bg

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's process group (its nanny and the worker process): a machine
        lost, no goodbye to the scheduler."""
        bg = self.workers[name]
        os.killpg(bg.proc.pid, signal.SIGKILL)
        bg.proc.wait(10)

    def stop(self) -> dict[str, float]:
        """Stop the workers, then the scheduler; seconds each."""
        out = {}
        for name, bg in reversed(self.workers.items()):
            out[f"stop dask worker {name} (module end)"] = bg.stop()
        out["stop dask scheduler (module end)"] = self.scheduler.stop()
        return out

    def log_sizes(self) -> dict[str, int]:
        """Worker name -> the size of its log now (see :meth:`logs_since`)."""
        return {name: bg.log.stat().st_size for name, bg in self.workers.items()}

    def logs_since(self, sizes: dict[str, int]) -> dict[str, str]:
        """Worker name -> what its log gained since ``sizes``."""
        out = {}
        for name, bg in self.workers.items():
            with bg.log.open("rb") as fh:
                fh.seek(sizes.get(name, 0))
                out[name] = fh.read().decode(errors="replace")
        return out

    def logs(self, lines: int = 30) -> str:
        """The tails of every process's log, for failure messages."""
        parts = [f"--- {self.scheduler.name}\n{log_tail(self.scheduler.log, lines)}"]
        parts += [f"--- {bg.name}\n{log_tail(bg.log, lines)}" for bg in self.workers.values()]
        return "\n".join(parts)

    @contextmanager
    def client(self, timeout: str = "20s") -> Iterator[Any]:
        """A ``distributed.Client`` on the scheduler (not the default client)."""
        from distributed import Client

        with Client(self.address, timeout=timeout, set_as_default=False) as client:
            yield client

    def worker_names(self, client: Any) -> dict[str, str]:
        """Worker address -> name, as the scheduler sees them now."""
        info = client.scheduler_info(n_workers=-1)["workers"]
        return {addr: str(w.get("name")) for addr, w in info.items()}

    def wait_workers(self, client: Any, names: set[str], timeout: float) -> dict[str, str]:
        """Wait until exactly ``names`` are connected; address -> name."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.worker_names(client)
            if set(seen.values()) == names:
                return seen
            dead = [bg.name for n, bg in self.workers.items() if n in names and not bg.alive()]
            if dead or time.monotonic() > deadline:
                pytest.fail(
                    f"the scheduler sees workers {sorted(seen.values())}, not {sorted(names)}"
                    f" (exited: {dead}) after {timeout:.0f} s\n{self.logs()}",
                    pytrace=False,
                )
            time.sleep(0.3)


def worker_env(api_url: str, pg_url: str, local_dir: Path, home: Path) -> dict[str, str]:
    """The workers' environment: the Prefect server, the warehouse, the checkout."""
    return clean_env(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home),
        SALESFLOW_HOME=str(REPO_ROOT),
        SALESFLOW_ENV="test",
        SALESFLOW_PATHS__LOCAL_DIR=str(local_dir),
        SALESFLOW_WAREHOUSE_URL=pg_url,
        # XGBoost's OpenMP threads spin at barriers by default: on a busy 2-core host that
        # makes fits many times slower (deployments/prefect.yaml sets the same).
        OMP_WAIT_POLICY="PASSIVE",
        PYTHONPATH=os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    )


def _wait_scheduler_file(cluster: DaskCluster, path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cluster.scheduler.alive():
            break
        try:
            return str(json.loads(path.read_text())["address"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    pytest.fail(
        f"dask scheduler wrote no {path.name} within {timeout:.0f} s (alive: "
        f"{cluster.scheduler.alive()})\n{log_tail(cluster.scheduler.log)}",
        pytrace=False,
    )


def start_dask_cluster(
    api_url: str,
    pg_url: str,
    local_dir: Path,
    folder: Path,
    processes: Processes,
    timings: dict[str, float],
) -> DaskCluster:
    """Start ``dask scheduler`` and two ``dask worker`` processes; wait for both workers."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = worker_env(api_url, pg_url, local_dir, folder / "prefect-home")
    t0 = time.perf_counter()
    scheduler = processes.start(
        "dask scheduler",
        dask_args("scheduler", port, free_port()),
        env=env,
        cwd=folder,  # --scheduler-file scheduler.json lands here
        log=folder / "scheduler.log",
        stop_signal=signal.SIGTERM,
        grace_s=15.0,
    )
    cluster = DaskCluster(f"tcp://127.0.0.1:{port}", port, env, folder, processes, scheduler)
    address = _wait_scheduler_file(cluster, folder / "scheduler.json", SCHEDULER_START_TIMEOUT_S)
    assert address == cluster.address, f"the scheduler listens on {address}"
    for name in WORKER_NAMES:
        cluster.start_worker(name)
    with cluster.client() as client:
        cluster.wait_workers(client, set(WORKER_NAMES), WORKERS_START_TIMEOUT_S)
    timings["dask scheduler + 2 workers start"] = time.perf_counter() - t0
    return cluster
