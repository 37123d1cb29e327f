"""``salesflow rollback``: point the champion back at the previous (or a named) version.

salesflow rollback [--to VERSION] [--env ENV] [--reason TEXT]

Wired into :mod:`salesflow.cli` with ``add_rollback_command(sub)``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_REASON = "manual rollback from the command line"


def _cmd_rollback(args: argparse.Namespace) -> int:
    from salesflow.lifecycle import record_audit, rollback
    from salesflow.settings import load_settings

    s = load_settings(args.env)
    name = s.model.name
    try:
        moved = rollback(
            s.tracking_uri,
            name,
            to_version=args.to_version,
            policy=s.policy,
            champion_alias=s.mlflow.champion_alias,
        )
    except ValueError as exc:
        print(f"salesflow: {exc}", file=sys.stderr)
        return 1
    # Say what happened before the audit write: the alias has moved even if the warehouse
    # is down, and the user must know that.
    print(
        f"Rolled back {name} champion from version {moved['from_version']} "
        f"to version {moved['to_version']}"
    )
    metrics: dict[str, Any] = {"requested_version": args.to_version, "env": s.env}
    record_audit(
        s.warehouse_url,
        s.monitor.audit_table,
        "rollback",
        name,
        moved["from_version"],
        moved["to_version"],
        args.reason,
        metrics,
        actor="cli",
        tracking_uri=s.tracking_uri,
        schema=s.warehouse.schema_name,
    )
    return 0


def add_rollback_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``rollback`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "rollback",
        help="point the champion alias back at the previous (or a named) model version",
        description="Point the champion alias back at the version holding the 'previous' "
        "alias, or at --to VERSION; records an audit row (actor 'cli'). A rollback removes "
        "the 'previous' alias, so a second one needs --to.",
    )
    p.add_argument("--to", dest="to_version", metavar="VERSION", help="roll back to this version")
    p.add_argument("--env", help="config environment: configs/<env>.yaml (default: dev)")
    p.add_argument("--reason", default=DEFAULT_REASON, help="why (kept in the audit trail)")
    p.set_defaults(func=_cmd_rollback)
    return p
