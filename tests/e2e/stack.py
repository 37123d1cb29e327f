"""The e2e stack: a real Prefect server, the deployments of deployments/prefect.yaml and a
worker, started with the README's own commands (see README_COMMANDS)."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .procs import REPO_ROOT, Background, Processes, clean_env, free_port, log_tail, run_cli

# The code block of the README section "## Run it on a schedule", command for command, as a
# user types them (default port 4200, the README's database and table). The tests run each
# one after :func:`localise` swaps in this session's port, database and table.
README_COMMANDS = {
    "server": "prefect server start --host 127.0.0.1 --port 4200",
    "pool": "prefect work-pool create salesflow-pool --type process",
    "deploy": "prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml",
    "worker": "prefect worker start --pool salesflow-pool",
    "train": "prefect deployment run 'train-forecaster/manual' --watch",
    "forecast": "prefect deployment run 'batch-forecast/weekly' --watch",
    "summary": (
        'psql postgresql://postgres@127.0.0.1:5432/postgres -c "SELECT forecast_origin, '
        "model_version, count(*) AS n_rows, count(DISTINCT unique_id) AS n_series "
        'FROM sales_forecasts GROUP BY 1, 2 ORDER BY 1 DESC"'
    ),
    "sample": (
        'psql postgresql://postgres@127.0.0.1:5432/postgres -c "SELECT unique_id, target_date, '
        "round(forecast::numeric, 1) AS forecast, round(lo_80::numeric, 1) AS lo_80, "
        "round(hi_80::numeric, 1) AS hi_80 FROM sales_forecasts "
        'ORDER BY forecast_origin DESC, unique_id, target_date LIMIT 10"'
    ),
}
README_PORT = "4200"
README_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
README_TABLE = "sales_forecasts"
SECTION = "## Run it on a schedule"
COMMAND_PROGRAMS = ("prefect", "salesflow", "psql")

SERVER_START_TIMEOUT_S = 90
RUN_TIMEOUT_S = 240
SCHEDULED_RUNS_TIMEOUT_S = 60
MODEL_NAME = "salesflow-forecaster"


@dataclass(frozen=True)
class Stack:
    api_url: str
    port: int
    cli_env: dict[str, str]
    local_dir: Path
    table: str
    pg_url: str
    deployed_at: float  # time.monotonic() when `prefect deploy` returned
    server: Background
    worker: Background


def localise(command: str, stack_port: int, pg_url: str, table: str) -> list[str]:
    """The README command as arguments for this session: its port, database and table."""
    libpq = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    args = []
    for arg in shlex.split(command):
        arg = arg.replace(README_PG_URL, libpq)
        arg = re.sub(rf"\b{README_TABLE}\b", table, arg)
        args.append(str(stack_port) if arg == README_PORT else arg)
    if args[0] in ("prefect", "salesflow"):
        # The console scripts of the interpreter running the tests (the project's venv).
        local = Path(sys.executable).parent / args[0]
        args[0] = str(local) if local.exists() else shutil.which(args[0]) or args[0]
    return args


def _wait_healthy(server: Background, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            pytest.fail(
                f"prefect server exited with code {server.proc.returncode}:\n"
                f"{log_tail(server.log)}",
                pytrace=False,
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(
        f"prefect server did not answer {url}/health within {timeout:.0f} s; log tail:\n"
        f"{log_tail(server.log)}",
        pytrace=False,
    )


def start_stack(
    pg_url: str,
    e2e_table: str,
    e2e_dir: Path,
    processes: Processes,
    e2e_timings: dict[str, float],
) -> Stack:
    """Start a real Prefect server, create the pool, deploy, start a worker."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    cli_env = clean_env(
        PREFECT_HOME=str(e2e_dir / "prefect-home"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{e2e_dir / 'prefect.db'}",
        PREFECT_API_URL=api_url,
    )

    def cmd(key: str) -> list[str]:
        return localise(README_COMMANDS[key], port, pg_url, e2e_table)

    t0 = time.perf_counter()
    server = processes.start(
        "prefect server",
        cmd("server"),
        env=cli_env,
        cwd=e2e_dir,
        log=e2e_dir / "server.log",
        stop_signal=signal.SIGTERM,
    )
    _wait_healthy(server, api_url, SERVER_START_TIMEOUT_S)
    e2e_timings["server start -> /api/health"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    run_cli(cmd("pool"), env=cli_env, cwd=REPO_ROOT, timeout=60, what="work-pool create")
    e2e_timings["prefect work-pool create"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    run_cli(cmd("deploy"), env=cli_env, cwd=REPO_ROOT, timeout=120, what="prefect deploy")
    deployed_at = time.monotonic()
    e2e_timings["prefect deploy --all"] = time.perf_counter() - t0

    local_dir = e2e_dir / "local"
    worker_env = clean_env(
        **{k: v for k, v in cli_env.items() if k.startswith("PREFECT_")},
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        SALESFLOW_HOME=str(REPO_ROOT),
        SALESFLOW_ENV="test",
        SALESFLOW_PATHS__LOCAL_DIR=str(local_dir),
        SALESFLOW_WAREHOUSE_URL=pg_url,
        SALESFLOW_WAREHOUSE__TABLE=e2e_table,
    )
    # Started outside the repository: the deployments' pull step must find the code.
    worker = processes.start(
        "prefect worker",
        cmd("worker"),
        env=worker_env,
        cwd=e2e_dir,
        log=e2e_dir / "worker.log",
        stop_signal=signal.SIGINT,  # a worker ignores SIGTERM
    )
    return Stack(api_url, port, cli_env, local_dir, e2e_table, pg_url, deployed_at, server, worker)


@contextmanager
def client_for(stack: Stack) -> Iterator[Any]:
    """A synchronous Prefect client talking to the session's server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client
