"""What the ``salesflow serve`` e2e test needs besides conftest's fixtures: a PostgreSQL
schema of its own, a Prefect server for the CLI's flows, the CLI environment, and API
processes started and waited for (no fixtures here: see test_serve_e2e.py)."""

from __future__ import annotations

import signal
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .procs import Background, Processes, clean_env, free_port, log_tail

SERVER_START_TIMEOUT_S = 90
READY_TIMEOUT_S = 90
MODEL_NAME = "salesflow-forecaster"  # configs/test.yaml keeps base.yaml's model.name
# The bearer token's variable: serving.admin_token_env's default, as a user exports it (every
# command must accept it: the unknown-variable check once refused it).
ADMIN_TOKEN_ENV = "SALESFLOW_ADMIN_TOKEN"


def venv_script(name: str) -> str:
    """The console script of the interpreter running the tests (the project's venv)."""
    return str(Path(sys.executable).parent / name)


def create_schema(pg_url: str) -> str:
    """A fresh PostgreSQL schema for this test's warehouse tables (forecasts, runs, audit,
    locks): nothing another session writes can collide with it."""
    import sqlalchemy as sa

    schema = f"serve_e2e_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    finally:
        engine.dispose()
    return schema


def drop_schema(pg_url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        engine.dispose()


def wait_for(bg: Background, url: str, timeout: float, what: str) -> float:
    """Poll ``url`` until it answers 200; fail with the log tail if the process exits or
    the time runs out. Returns the seconds waited."""
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout:
        if not bg.alive():
            pytest.fail(
                f"{what} exited with code {bg.proc.returncode}:\n{log_tail(bg.log)}",
                pytrace=False,
            )
        try:
            resp = httpx.get(url, timeout=5)
            if resp.status_code == 200:
                return time.monotonic() - start
            last = f"{resp.status_code} {resp.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    pytest.fail(
        f"{what}: {url} did not answer 200 within {timeout:.0f} s (last: {last}); log tail:\n"
        f"{log_tail(bg.log)}",
        pytrace=False,
    )


def start_prefect_server(processes: Processes, work: Path) -> tuple[Background, dict[str, str]]:
    """A Prefect server of this test (the CLI's flows report to it instead of starting a
    temporary server per command, ~18 s each here) and the PREFECT_* variables to reach it."""
    port = free_port()
    prefect_env = {
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{work / 'prefect.db'}",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    bg = processes.start(
        "prefect server (serve e2e)",
        [venv_script("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=clean_env(**prefect_env),
        cwd=work,
        log=work / "prefect-server.log",
        stop_signal=signal.SIGTERM,
    )
    wait_for(bg, f"{prefect_env['PREFECT_API_URL']}/health", SERVER_START_TIMEOUT_S, "prefect")
    return bg, prefect_env


@dataclass(frozen=True)
class Service:
    """A running ``salesflow serve``."""

    name: str
    url: str
    bg: Background

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=60, **kwargs)


def copy_champion(tracking_uri: str, model_name: str) -> str:
    """Register a copy of the champion's model version as the model's next version (the
    same artifact; seconds instead of another training). Returns the new version."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return str(client.copy_model_version(f"models:/{model_name}@champion", model_name).version)


def start_service(
    processes: Processes, name: str, env: Mapping[str, str], work: Path, **settings: str
) -> Service:
    """``salesflow serve --port P`` with ``env`` plus ``SALESFLOW_SERVING__<KEY>`` for each
    of ``settings``; not waited for (see :func:`wait_for`)."""
    port = free_port()
    extra = {f"SALESFLOW_SERVING__{k.upper()}": v for k, v in settings.items()}
    bg = processes.start(
        f"salesflow serve ({name})",
        [venv_script("salesflow"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, **extra},
        cwd=work,
        log=work / f"serve-{name}.log",
        stop_signal=signal.SIGTERM,
    )
    return Service(name, f"http://127.0.0.1:{port}", bg)


def metric_value(text: str, sample_name: str, /, **labels: str) -> float:
    """The sum of the samples ``sample_name`` in Prometheus text whose labels include
    ``labels`` (0.0 when there is none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total
