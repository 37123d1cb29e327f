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
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .procs import REPO_ROOT, log_tail, run_cli
from .stack import (
    COMMAND_PROGRAMS,
    MODEL_NAME,
    README_COMMANDS,
    RUN_TIMEOUT_S,
    SCHEDULED_RUNS_TIMEOUT_S,
    SECTION,
    Stack,
    client_for,
    localise,
)

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class FinishedRun:
    flow_run_id: str
    state: str
    seconds: float


# --- the README's commands ----------------------------------------------------------------


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
    from salesflow.modelling.registry import get_alias_version

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
    """The server's scheduler creates runs from every cron schedule soon after deploy; the
    training deployment has none (scheduled retraining goes through the policy)."""
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
        "monitor-forecasts/after-actuals": {"weekday": 0, "day": None, "hour": 5},
        "retrain-forecaster/on-drift": {"weekday": None, "day": 1, "hour": 4},
    }
    scheduled: dict[str, list[Any]] = {}
    deadline = stack.deployed_at + SCHEDULED_RUNS_TIMEOUT_S
    with client_for(stack) as client:
        manual = client.read_deployment_by_name("train-forecaster/manual")
        assert not manual.schedules, f"train-forecaster/manual is scheduled: {manual.schedules}"
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
    """`prefect deployment run 'train-forecaster/manual'` completes and sets the champion."""
    run, version = champion
    assert run.state == "Completed"
    assert version is not None, "no model version holds the 'champion' alias after training"
    assert version.name == MODEL_NAME
    assert version.run_id


def _expected_series() -> tuple[set[str], int, dt.date]:
    """The test config's series that pass the history gate, its horizon, the next origin."""
    from salesflow.config.settings import load_settings
    from salesflow.data.sources import load_sales

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
    from salesflow.storage.warehouse import count_rows, read_forecasts

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
