"""Background processes and CLI calls for the e2e tests (no fixtures here: see conftest)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


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
