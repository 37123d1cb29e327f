"""End-to-end fixtures: PostgreSQL (or a skip), an isolated environment, background processes.

Every process started here (Prefect server, worker) is registered with :func:`processes` and
stopped at the end of the session in reverse start order: the worker with SIGINT (it ignores
SIGTERM), the server with SIGTERM, each killed if it outlives its grace period.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get(
    "SALESFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TIMINGS: dict[str, float] = {}  # step -> seconds, printed in the terminal summary


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if TIMINGS:
        terminalreporter.section("e2e timings")
        for step, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:7.1f} s  {step}")


@pytest.fixture(scope="session")
def e2e_timings() -> dict[str, float]:
    """Seconds per step of the end-to-end run, shown after the tests."""
    return TIMINGS


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL test URL; skip when unreachable, unless CI=true (then fail)."""
    from salesflow.warehouse import WarehouseUnavailable, check_connection

    try:
        check_connection(PG_URL)
    except WarehouseUnavailable as exc:
        reason = f"PostgreSQL is unreachable: {exc} (start it, or set SALESFLOW_TEST_PG_URL)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return PG_URL


@pytest.fixture(scope="session")
def e2e_table(pg_url: str) -> Iterator[str]:
    """A warehouse table of this session only, dropped at its end."""
    import sqlalchemy as sa

    table = f"sales_forecasts_e2e_{uuid.uuid4().hex[:8]}"
    yield table
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's scratch folder: Prefect home and database, MLflow, logs."""
    return tmp_path_factory.mktemp("e2e")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without PREFECT_* / SALESFLOW_* settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "SALESFLOW_")) and k != "CI"
    }
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        GX_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


@dataclass
class Background:
    """A long-running process whose output goes to ``log``."""

    name: str
    proc: subprocess.Popen
    log: Path
    stop_signal: int
    grace_s: float

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> float:
        """Send the stop signal, wait the grace period, kill the process group if needed."""
        start = time.perf_counter()
        if self.alive():
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                # The group holds what the process started (uvicorn, flow runs): ours alone.
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return time.perf_counter() - start


@dataclass
class Processes:
    started: list[Background] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
        stop_signal: int,
        grace_s: float = 20.0,
    ) -> Background:
        handle = log.open("ab")
        try:
            proc = subprocess.Popen(
                list(args),
                env=dict(env),
                cwd=cwd,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a group of its own: signals reach only it
            )
        finally:
            handle.close()
        bg = Background(name, proc, log, stop_signal, grace_s)
        self.started.append(bg)
        return bg


@pytest.fixture(scope="session")
def processes() -> Iterator[Processes]:
    """Start background processes; all are stopped (last started first) at session end."""
    procs = Processes()
    yield procs
    for bg in reversed(procs.started):
        TIMINGS[f"stop {bg.name}"] = bg.stop()


def run_cli(
    args: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float, what: str
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; fail with its output when it fails or times out."""
    try:
        res = subprocess.run(
            list(args),
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        pytest.fail(f"{what}: timed out after {timeout:.0f} s\n{out[-4000:]}", pytrace=False)
    if res.returncode != 0:
        pytest.fail(
            f"{what}: exit code {res.returncode}\n--- stdout\n{res.stdout[-4000:]}\n"
            f"--- stderr\n{res.stderr[-4000:]}",
            pytrace=False,
        )
    return res
