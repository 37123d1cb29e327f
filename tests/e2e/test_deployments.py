"""The README's "Run it on a schedule" commands, run for real.

A Prefect server, a process work pool, ``prefect deploy`` of deployments/prefect.yaml and a
worker, then ``prefect deployment run`` of the training and the batch forecast deployments
against PostgreSQL. The commands are those of :data:`README_COMMANDS`, which
:func:`test_readme_section_lists_the_commands_run_here` holds equal to the README section.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import shutil
import signal
import subprocess
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

from .conftest import REPO_ROOT, Background, Processes, clean_env, free_port, log_tail, run_cli

pytestmark = pytest.mark.e2e

# The code block of the README section "## Run it on a schedule", command for command, as a
# user types them (default port 4200, the README's database and table). The tests run each
# one after :func:`localise` swaps in this session's port, database and table.
README_COMMANDS = {
    "server": "prefect server start --host 127.0.0.1 --port 4200",
    "pool": "prefect work-pool create salesflow-pool --type process",
    "deploy": "prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml",
    "worker": "prefect worker start --pool salesflow-pool",
    "train": "prefect deployment run 'train-forecaster/monthly' --watch",
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


@dataclass(frozen=True)
class FinishedRun:
    flow_run_id: str
    state: str
    seconds: float


# --- the README's commands ----------------------------------------------------------------


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


def section_text() -> tuple[str, Path]:
    """The "Run it on a schedule" section of README.md."""
    for path in (REPO_ROOT / "README.md",):
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        start = text.find(SECTION + "\n")
        if start < 0:
            continue
        body = text[start + len(SECTION) :]
        end = re.search(r"^## ", body, flags=re.M)
        return body[: end.start()] if end else body, path
    pytest.fail(f"no {SECTION!r} section in README.md")


def section_commands(markdown: str) -> list[list[str]]:
    """Commands of the section's fenced code blocks that start with prefect/salesflow/psql."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.M | re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            args = shlex.split(line, comments=True)
            if args and args[0] in COMMAND_PROGRAMS:
                commands.append(args)
    return commands


def test_readme_section_lists_the_commands_run_here():
    """Every prefect/salesflow/psql command of the README section is one these tests run."""
    markdown, path = section_text()
    documented = section_commands(markdown)
    ours = [shlex.split(c) for c in README_COMMANDS.values()]
    unknown = [shlex.join(c) for c in documented if c not in ours]
    assert not unknown, f"{path}: commands the e2e tests do not run: {unknown}"
    missing = [shlex.join(c) for c in ours if c not in documented]
    assert not missing, f"{path}: commands the e2e tests run but the section lacks: {missing}"


# --- the stack: server, pool, deployments, worker ------------------------------------------


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


@pytest.fixture(scope="session")
def stack(
    pg_url: str,
    e2e_table: str,
    e2e_dir: Path,
    processes: Processes,
    e2e_timings: dict[str, float],
) -> Stack:
    """A real Prefect server with the deployments of deployments/prefect.yaml and a worker."""
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


def run_deployment(stack: Stack, key: str, timings: dict[str, float]) -> FinishedRun:
    """Run a README `prefect deployment run ... --watch` command; its flow run's final state."""
    args = localise(README_COMMANDS[key], stack.port, stack.pg_url, stack.table)
    what = shlex.join(shlex.split(README_COMMANDS[key]))
    if not stack.worker.alive():
        pytest.fail(f"the worker has exited:\n{log_tail(stack.worker.log)}", pytrace=False)
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            args,
            env=stack.cli_env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        out, code = res.stdout + res.stderr, res.returncode
    except subprocess.TimeoutExpired as exc:
        out, code = str(exc.stdout or ""), None
    seconds = time.perf_counter() - t0
    match = re.search(r"UUID: ([0-9a-f-]{36})", out)
    if code != 0 or match is None:
        pytest.fail(
            f"{what}: {'timed out' if code is None else f'exit code {code}'} after "
            f"{seconds:.0f} s\n--- output\n{out[-3000:]}\n--- worker log\n"
            f"{log_tail(stack.worker.log, 60)}",
            pytrace=False,
        )
    run_id = match.group(1)
    with client_for(stack) as client:
        state = client.read_flow_run(run_id).state
    timings[f"{what} (run {run_id[:8]})"] = seconds
    return FinishedRun(run_id, state.name if state else "unknown", seconds)


@pytest.fixture(scope="session")
def champion(stack: Stack, e2e_timings: dict[str, float]) -> tuple[FinishedRun, Any]:
    """The training deployment's run and the model version that became champion."""
    from salesflow.registry import get_alias_version

    run = run_deployment(stack, "train", e2e_timings)
    tracking_uri = f"sqlite:///{stack.local_dir / 'mlflow.db'}"
    return run, get_alias_version(tracking_uri, MODEL_NAME, "champion")


# --- tests ---------------------------------------------------------------------------------


def test_ui_is_served(stack: Stack):
    """The server answers the UI's root page (the README sends users there)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/", timeout=10) as resp:
        assert resp.status == 200
        assert "<html" in resp.read(4096).decode(errors="replace").lower()


def test_cron_schedules_create_scheduled_runs(stack: Stack, e2e_timings: dict[str, float]):
    """The server's scheduler creates runs from both cron schedules soon after deploy."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    expected = {  # deployment -> (cron fields that every scheduled start must match)
        "batch-forecast/weekly": {"weekday": 0, "day": None, "hour": 6},
        "train-forecaster/monthly": {"weekday": None, "day": 1, "hour": 3},
    }
    scheduled: dict[str, list[Any]] = {}
    deadline = stack.deployed_at + SCHEDULED_RUNS_TIMEOUT_S
    with client_for(stack) as client:
        ids = {name: client.read_deployment_by_name(name).id for name in expected}
        while True:
            for name, dep_id in ids.items():
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id])),
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                        )
                    ),
                )
                scheduled[name] = [r for r in runs if r.auto_scheduled]
            if all(scheduled.values()) or time.monotonic() > deadline:
                break
            time.sleep(1)
    e2e_timings["deploy -> scheduled runs seen"] = time.monotonic() - stack.deployed_at
    now = dt.datetime.now(dt.UTC)
    for name, runs in scheduled.items():
        assert runs, (
            f"no scheduled runs of {name} {SCHEDULED_RUNS_TIMEOUT_S} s after deploy: the "
            f"scheduler service is not creating runs (SQLAlchemy 2.1?); server log:\n"
            f"{log_tail(stack.server.log)}"
        )
        want = expected[name]
        for r in runs:
            start = r.expected_start_time.astimezone(dt.UTC)
            assert start > now - dt.timedelta(minutes=1), f"{name}: {start} is in the past"
            assert (start.hour, start.minute) == (want["hour"], 0), f"{name}: {start}"
            if want["weekday"] is not None:
                assert start.weekday() == want["weekday"], f"{name}: {start} not a Monday"
            if want["day"] is not None:
                assert start.day == want["day"], f"{name}: {start} not the 1st"


def test_training_deployment_registers_a_champion(champion):
    """`prefect deployment run 'train-forecaster/monthly'` completes and sets the champion."""
    run, version = champion
    assert run.state == "Completed"
    assert version is not None, "no model version holds the 'champion' alias after training"
    assert version.name == MODEL_NAME
    assert version.run_id


def _expected_series() -> tuple[set[str], int, dt.date]:
    """The test config's series that pass the history gate, its horizon, the next origin."""
    from salesflow.settings import load_settings
    from salesflow.sources import load_sales

    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("SALESFLOW_")]:
            mp.delenv(k)
        settings = load_settings("test")
    data = load_sales(settings.data)
    counts = data.history.groupby("unique_id").size()
    series = set(counts[counts >= settings.validation.min_history].index.astype(str))
    origin = (data.history["ds"].max() + dt.timedelta(days=7)).date()
    return series, settings.model.horizon, origin


def _psql_rows(stack: Stack, key: str) -> list[list[str]]:
    """Run a README psql command; the cells of its aligned output's data rows."""
    args = localise(README_COMMANDS[key], stack.port, stack.pg_url, stack.table)
    res = run_cli(args, env=stack.cli_env, cwd=REPO_ROOT, timeout=30, what=f"psql ({key})")
    lines = res.stdout.splitlines()
    body = lines[2:] if len(lines) > 2 else []  # header, separator, rows, "(n rows)"
    return [[c.strip() for c in ln.split("|")] for ln in body if "|" in ln]


def test_batch_forecast_deployment_writes_every_series_once(
    stack: Stack, champion, e2e_timings: dict[str, float]
):
    """`prefect deployment run 'batch-forecast/weekly'` writes series x horizon rows of the
    champion to PostgreSQL; running it again for the same origin replaces them."""
    from salesflow.warehouse import count_rows, read_forecasts

    _, version = champion
    assert version is not None, "training did not produce a champion"
    series, horizon, origin = _expected_series()

    first = run_deployment(stack, "forecast", e2e_timings)
    assert first.state == "Completed"
    rows = read_forecasts(stack.pg_url, table=stack.table)
    assert len(rows) == len(series) * horizon
    assert set(rows["unique_id"]) == series
    assert (rows.groupby("unique_id").size() == horizon).all()
    assert set(rows["horizon"]) == set(range(1, horizon + 1))
    assert set(rows["forecast_origin"].dt.date) == {origin}
    assert set(rows["model_name"]) == {MODEL_NAME}
    assert set(rows["model_version"]) == {str(version.version)}
    assert set(rows["mlflow_run_id"]) == {version.run_id}
    assert set(rows["flow_run_id"]) == {first.flow_run_id}
    assert rows["forecast"].notna().all()

    again = run_deployment(stack, "forecast", e2e_timings)
    assert again.state == "Completed"
    assert count_rows(stack.pg_url, stack.table) == len(series) * horizon
    rows = read_forecasts(stack.pg_url, table=stack.table)
    assert set(rows["flow_run_id"]) == {again.flow_run_id}, "the re-run did not replace rows"

    summary = _psql_rows(stack, "summary")
    assert summary == [[str(origin), str(version.version), str(len(rows)), str(len(series))]]
    sample = _psql_rows(stack, "sample")
    assert len(sample) == 10 and all(r[0] in series for r in sample)
