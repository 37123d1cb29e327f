"""``salesflow dashboard``: the planners' dashboard (Streamlit) on the warehouse and registry
of an env.

salesflow dashboard [--env ENV] [--port PORT] [--host HOST]

Replaces this process with ``streamlit run <app.py> --server.headless true --server.port
PORT -- --env ENV``: Ctrl-C (or SIGTERM) reaches Streamlit itself, which stops cleanly.
Wired into :mod:`salesflow.cli` with ``add_dashboard_command(sub)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from salesflow.commands.cli_errors import port_number

APP = Path(__file__).resolve().parent / "dashboard" / "app.py"


def streamlit_argv(env: str, port: int, host: str) -> list[str]:
    """The command that serves the dashboard of ``env`` on ``host:port``: headless, no usage
    statistics, no file watcher, the env passed to the script after ``--``."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--",
        "--env",
        env,
    ]


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from salesflow.config.settings import load_settings

    settings = load_settings(args.env)  # a bad env or setting fails here, in one line
    port = args.port or settings.serving.dashboard_port
    host = args.host or settings.serving.host
    argv = streamlit_argv(settings.env, port, host)
    print(f"salesflow dashboard (env {settings.env}) on http://{host}:{port}", flush=True)
    os.execv(argv[0], argv)
    return 0  # not reached: exec replaced this process


def add_dashboard_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dashboard`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "dashboard",
        help="the planners' dashboard (Streamlit): forecasts, accuracy, models, drift, batch",
        description="Serve the dashboard of an env's warehouse and MLflow registry: a "
        "series' history, latest forecast with 80/95 %% bands and actuals; totals per store; "
        "realized accuracy and interval coverage by model version; promotions, rejections, "
        "rollbacks; the last monitor run's drift; batch forecasts from a CSV. Ctrl-C stops it.",
    )
    p.add_argument("--env", help="config environment: configs/<env>.yaml (default: dev)")
    p.add_argument("--port", type=port_number, help="port (default: serving.dashboard_port, 8501)")
    p.add_argument("--host", help="address to listen on (default: serving.host, 127.0.0.1)")
    p.set_defaults(func=_cmd_dashboard)
    return p
