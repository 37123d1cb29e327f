"""``salesflow serve``: the REST API (uvicorn) on the warehouse and registry of an env.

salesflow serve [--env ENV] [--host HOST] [--port PORT]

Settings as every command loads them (``configs/base.yaml`` < ``configs/<env>.yaml`` <
``SALESFLOW_*`` variables); ``--host``/``--port`` beat ``serving.host``/``serving.port``.
Ctrl-C or SIGTERM stops it (uvicorn finishes the requests in flight). Wired into
:mod:`salesflow.cli` with ``add_serve_command(sub)``.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from salesflow.commands.cli_errors import port_number


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from salesflow.config.settings import load_settings
    from salesflow.serving.api import create_app

    settings = load_settings(args.env)  # a bad env or setting fails here, in one line
    host = args.host or settings.serving.host
    port = args.port or settings.serving.port
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    print(
        f"salesflow serve (env {settings.env}, model {settings.model.name}) on "
        f"http://{host}:{port} (docs: /docs)",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level=args.log_level, access_log=args.access_log)
    return 0


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "serve",
        help="the REST API: stored forecasts, on-demand predictions, model info, metrics",
        description="Serve the REST API of an env: GET /forecasts (stored forecasts, JSON or "
        "CSV), POST /predict and /predict/batch (on-demand from the champion, with what-if "
        "overrides), GET /model/info, /models, /audit, /accuracy, /health, /ready, /metrics, "
        "POST /admin/reload. The champion is reloaded when its alias moves "
        "(serving.poll_seconds). OpenAPI docs at /docs. Ctrl-C stops it.",
    )
    p.add_argument("--env", help="config environment: configs/<env>.yaml (default: dev)")
    p.add_argument("--host", help="address to listen on (default: serving.host, 127.0.0.1)")
    p.add_argument("--port", type=port_number, help="port (default: serving.port, 8000)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default: info)",
    )
    p.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="do not log every request (faster under load)",
    )
    p.set_defaults(func=_cmd_serve)
    return p
