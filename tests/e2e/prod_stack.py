"""The production stack of issue #16, as processes on this machine (no containers).

A Prefect server on PostgreSQL, an ``mlflow server`` with a PostgreSQL backend store and
proxied artifacts (``--artifacts-destination``), the warehouse in PostgreSQL, and a process
worker with ``SALESFLOW_ENV=prod``: each server on a database of its own, created here and
dropped at the end. The secrets (URLs) live only in the processes' environments.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .procs import REPO_ROOT, Background, Processes, clean_env, free_port, log_tail, run_cli

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PREFECT_START_TIMEOUT_S = 90  # ~45 s on a fresh PostgreSQL database (STACK-NOTES)
MLFLOW_START_TIMEOUT_S = 90
RUN_TIMEOUT_S = 240
MODEL = "salesflow-forecaster"  # configs/base.yaml: prod keeps the default name
POOL = "salesflow-pool"

# configs/scenario.yaml's data and model, on top of configs/prod.yaml through SALESFLOW_*
# variables of the worker (no YAML, no secrets): the synthetic panel shifts on 2012-05-04.
SCENARIO_ENV = {
    "SALESFLOW_DATA__SYNTHETIC__N_STORES": "4",
    "SALESFLOW_DATA__SYNTHETIC__N_DEPTS": "6",
    "SALESFLOW_DATA__SYNTHETIC__PERIODS": "143",
    "SALESFLOW_DATA__SYNTHETIC__DRIFT": json.dumps(
        {
            "start": "2012-05-04",
            "covariate_shift": {"temperature": 1.5, "fuel_price": 2.5, "cpi": 2.0},
            "level_shift": 0.4,
        }
    ),
    "SALESFLOW_MODEL__HORIZON": "13",
    "SALESFLOW_MODEL__N_ESTIMATORS": "120",
    "SALESFLOW_BACKTEST__N_ORIGINS": "1",
    "SALESFLOW_POLICY__HOLDOUT_PERIODS": "13",
    "SALESFLOW_WAREHOUSE__RETRIES": "1",
    "SALESFLOW_WAREHOUSE__RETRY_DELAY_SECONDS": "0.5",
}


def _exe(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name) or name


def _admin(sql: str) -> None:
    """One statement on the PostgreSQL server outside a transaction (CREATE/DROP DATABASE)."""
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def create_database(name: str) -> str:
    _admin(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg(db: str, driver: str = "psycopg") -> str:
    return f"postgresql+{driver}://postgres@127.0.0.1:5432/{db}"


def wait_http(bg: Background, url: str, timeout: float) -> float:
    """Seconds until ``url`` answers 200; fail with the log tail if the process exits."""
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not bg.alive():
            pytest.fail(
                f"{bg.name} exited with code {bg.proc.returncode}:\n{log_tail(bg.log)}",
                pytrace=False,
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - t0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{bg.name}: no answer at {url} in {timeout:.0f} s:\n{log_tail(bg.log)}")


@dataclass
class ProdStack:
    root: Path
    dbs: dict[str, str]  # role -> database name
    procs: Processes
    prefect_port: int
    mlflow_port: int
    artifacts_dir: Path
    cli_env: dict[str, str]
    worker_env: dict[str, str]
    servers: dict[str, Background] = field(default_factory=dict)
    deployment_ids: dict[str, uuid.UUID] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def warehouse_url(self) -> str:
        return pg(self.dbs["warehouse"])

    @property
    def mlflow_db_url(self) -> str:
        return pg(self.dbs["mlflow"])

    # --- processes ------------------------------------------------------------------------

    def start_prefect(self) -> float:
        bg = self.procs.start(
            "prefect server",
            [_exe("prefect"), "server", "start", "--host", "127.0.0.1"]
            + ["--port", str(self.prefect_port)],
            env=self.cli_env,
            cwd=self.root,
            log=self.root / "prefect-server.log",
            stop_signal=signal.SIGTERM,
        )
        self.servers["prefect"] = bg
        return wait_http(bg, f"{self.api_url}/health", PREFECT_START_TIMEOUT_S)

    def start_mlflow(self) -> float:
        # The store URI (in production it holds a password) from the environment, not argv.
        env = clean_env(MLFLOW_BACKEND_STORE_URI=self.mlflow_db_url)
        bg = self.procs.start(
            "mlflow server",
            [_exe("mlflow"), "server"]
            + ["--artifacts-destination", str(self.artifacts_dir), "--workers", "1"]
            + ["--host", "127.0.0.1", "--port", str(self.mlflow_port)],
            env=env,
            cwd=self.root,
            log=self.root / "mlflow-server.log",
            stop_signal=signal.SIGINT,  # it has worker children (STACK-NOTES)
        )
        self.servers["mlflow"] = bg
        return wait_http(bg, f"{self.tracking_uri}/health", MLFLOW_START_TIMEOUT_S)

    def start_worker(self) -> None:
        self.servers["worker"] = self.procs.start(
            "prefect worker",
            [_exe("prefect"), "worker", "start", "--pool", POOL],
            env=self.worker_env,
            cwd=self.root,  # outside the repository: the pull step must find the code
            log=self.root / "worker.log",
            stop_signal=signal.SIGINT,  # a worker ignores SIGTERM
        )

    def stop(self, role: str) -> float:
        bg = self.servers[role]
        seconds = bg.stop()
        self.procs.started.remove(bg)
        return seconds

    def deploy(self) -> None:
        prefect = _exe("prefect")
        run_cli(
            [prefect, "work-pool", "create", POOL, "--type", "process"],
            env=self.cli_env,
            cwd=REPO_ROOT,
            timeout=60,
            what="work-pool create",
        )
        run_cli(
            [prefect, "--no-prompt", "deploy", "--all"]
            + ["--prefect-file", "deployments/prefect.yaml"],
            env=self.cli_env,
            cwd=REPO_ROOT,
            timeout=120,
            what="prefect deploy",
        )
        with self.client() as c:
            for name in (
                "train-forecaster/manual",
                "batch-forecast/weekly",
                "monitor-forecasts/after-actuals",
                "retrain-forecaster/on-drift",
            ):
                self.deployment_ids[name] = c.read_deployment_by_name(name).id

    # --- Prefect ---------------------------------------------------------------------------

    @contextmanager
    def client(self) -> Iterator[Any]:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}), get_client(sync_client=True) as c:
            yield c

    def submit(self, deployment: str, **parameters: Any) -> uuid.UUID:
        with self.client() as c:
            run = c.create_flow_run_from_deployment(
                self.deployment_ids[deployment], parameters=parameters
            )
        return run.id

    def wait_final(self, run_id: uuid.UUID, timeout: float = RUN_TIMEOUT_S) -> Any:
        """The flow run once its state is final; tolerates a server that is briefly down."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as c:
                    run = c.read_flow_run(run_id)
                if run.state and run.state.is_final():
                    return run
            except Exception:  # noqa: BLE001 - the server may be restarting
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"flow run {run_id} not final after {timeout:.0f} s\n--- worker log\n"
                    f"{log_tail(self.root / 'worker.log', 60)}",
                    pytrace=False,
                )
            time.sleep(1)

    def run(self, deployment: str, timeout: float = RUN_TIMEOUT_S, **parameters: Any) -> Any:
        return self.wait_final(self.submit(deployment, **parameters), timeout)

    def logs(self, run_id: uuid.UUID) -> str:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        with self.client() as c:
            logs = c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        return "\n".join(f"{lg.name}: {lg.message}" for lg in logs)

    def describe(self, run: Any) -> str:
        return (
            f"{run.name} {run.state.name if run.state else '?'}: "
            f"{run.state.message if run.state else ''}\n--- run logs\n{self.logs(run.id)[-4000:]}"
            f"\n--- worker log\n{log_tail(self.root / 'worker.log', 40)}"
        )


def build_stack(root: Path, procs: Processes) -> ProdStack:
    """Databases, environments and ports (nothing started yet)."""
    tag = uuid.uuid4().hex[:8]
    dbs = {
        role: create_database(f"sf_e2e_{role}_{tag}") for role in ("prefect", "mlflow", "warehouse")
    }
    prefect_port, mlflow_port = free_port(), free_port()
    artifacts = root / "mlflow-artifacts"
    artifacts.mkdir()
    cli_env = clean_env(
        PREFECT_HOME=str(root / "prefect-home"),
        PREFECT_API_DATABASE_CONNECTION_URL=pg(dbs["prefect"], "asyncpg"),
        PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api",
    )
    worker_env = clean_env(
        PREFECT_HOME=str(root / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        SALESFLOW_HOME=str(REPO_ROOT),
        SALESFLOW_ENV="prod",
        SALESFLOW_PATHS__LOCAL_DIR=str(root / "local"),
        SALESFLOW_WAREHOUSE_URL=pg(dbs["warehouse"]),
        SALESFLOW_MLFLOW__TRACKING_URI=f"http://127.0.0.1:{mlflow_port}",
        **SCENARIO_ENV,
    )
    return ProdStack(root, dbs, procs, prefect_port, mlflow_port, artifacts, cli_env, worker_env)
