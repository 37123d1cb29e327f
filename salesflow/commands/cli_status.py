"""``salesflow status``: what a command will use (env, registry, warehouse, Prefect API) and
what it will find there (champion and versions, last forecast, last audit rows), and the
tags every flow run started from the command line carries.

salesflow status [--env ENV]

Wired into :mod:`salesflow.cli` with ``add_status_command(sub)``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import Any

FLOW_COMMANDS = ("train", "forecast", "monitor", "retrain")
# A registry on a closed port must not keep `status` waiting minutes (MLflow's defaults).
_QUICK_MLFLOW = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def cli_tags(command: str, env: str | None) -> list[str]:
    """Tags of a flow run started by ``salesflow <command>``: who, which env, which command.
    ``env`` is the explicit ``--env``; else ``$SALESFLOW_ENV``; else ``dev`` (the precedence
    of :func:`salesflow.settings.load_settings`)."""
    env = env or os.environ.get("SALESFLOW_ENV") or "dev"
    return ["salesflow", "cli", f"env:{env}", command]


@contextlib.contextmanager
def run_tags(args: argparse.Namespace) -> Iterator[None]:
    """Around a command: flow commands tag their Prefect runs (:func:`cli_tags`)."""
    if getattr(args, "command", None) not in FLOW_COMMANDS:
        yield
        return
    from prefect import tags

    with tags(*cli_tags(args.command, getattr(args, "env", None))):
        yield


def prefect_api() -> tuple[str, str]:
    """The Prefect API flow commands will use, and where that came from."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"], "environment variable PREFECT_API_URL"
    from prefect.context import get_settings_context

    ctx = get_settings_context()
    if ctx.settings.api.url:
        return str(ctx.settings.api.url), f"Prefect profile {ctx.profile.name!r}"
    return "ephemeral", "PREFECT_API_URL unset: each command starts a temporary local server"


def _print_status(st: Any, api: tuple[str, str]) -> None:
    print(f"env        {st.env.value}  [{st.env.origin}]")
    print(f"registry   {st.registry.value}  [{st.registry.origin}]")
    print(f"warehouse  {st.warehouse.value}  [{st.warehouse.origin}]")
    print(f"prefect    {api[0]}  [{api[1]}]")
    print(f"\nmodel {st.model_name}: versions, newest first")
    if not st.versions:
        print(f"  {st.versions_note}")
    for v in st.versions:
        aliases = ", ".join(v["aliases"]) or "-"
        print(
            f"  v{v['version']:<4} aliases: {aliases:<20} status: {v['status']:<10} "
            f"trained until {v['trained_until']}  env {v['env']}  registered {v['created']}"
        )
    print("\nlast forecast")
    f = st.last_forecast
    if f is None:
        print(f"  {st.forecast_note}")
    else:
        print(
            f"  origin {f['origin']}: {f['rows']:,} rows, {f['series']:,} series, model "
            f"version {', '.join(f['model_versions'])}, written {f['written_at']} UTC"
        )
        if run := f.get("last_run"):
            print(
                f"  last write: origin {run['forecast_origin']}, "
                f"{int(run['rows_written'] or 0):,} rows, "
                f"flow run {run['flow_run_id'] or '-'}, env {run['env'] or '-'}, "
                f"finished {run['finished_at']} UTC"
            )
    print("\nlast audit rows, newest first")
    if not st.audit:
        print(f"  {st.audit_note}")
    for a in st.audit:
        print(
            f"  {a['at']}  {a['action']:<8} {a['from_version'] or '-'} -> "
            f"{a['to_version'] or '-'}  by {a['actor']}: {a['reason']}"
        )
    for w in st.warnings:
        print(f"\nWARNING: {w}")


def _cmd_status(args: argparse.Namespace) -> int:
    for k, v in _QUICK_MLFLOW.items():
        os.environ.setdefault(k, v)
    from salesflow.commands.status import gather_status

    _print_status(gather_status(args.env), prefect_api())
    return 0


def add_status_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``status`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "status",
        help="which env, registry, warehouse and Prefect API a command uses; champion, "
        "last forecast, audit",
        description="Show which config env, MLflow registry, warehouse and Prefect API a "
        "salesflow command will use (passwords hidden) and where each came from; the "
        "champion and latest versions; the last forecast origin; the last audit rows; and "
        "warn when the trail is split between warehouses. Reads only; writes nothing.",
    )
    p.add_argument("--env", help="config environment: configs/<env>.yaml (default: dev)")
    p.set_defaults(func=_cmd_status)
    return p
