"""``salesflow rollback``, and the first-champion gate of ``salesflow train``.

salesflow rollback [--to VERSION] [--env ENV] [--reason TEXT]
salesflow train ... [--force-champion [--reason TEXT]] [--actor NAME]

Wired into :mod:`salesflow.cli` with ``add_rollback_command(sub)`` and
``add_train_gate_options(train_parser)``. ``salesflow train`` exits with
:data:`EXIT_REJECTED` (3) when the policy rejected the model as first champion.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

DEFAULT_REASON = "manual rollback from the command line"
EXIT_REJECTED = 3  # the model was registered, but the policy kept it from becoming champion


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def add_train_gate_options(p: argparse.ArgumentParser) -> None:
    """``--force-champion``, ``--reason`` and ``--actor`` for ``salesflow train``."""
    p.add_argument(
        "--force-champion",
        action="store_true",
        help="make this model the champion even if it fails the policy's guardrails on its "
        "own backtest or another version is champion (audited with --actor and --reason)",
    )
    p.add_argument("--reason", help="why the champion is forced (kept in the audit trail)")
    p.add_argument("--actor", help="who forces it, for the audit trail (default: the OS user)")


def train_gate_args(args: argparse.Namespace) -> dict[str, Any]:
    """The training flow's force_champion / actor / force_reason parameters."""
    return {
        "force_champion": bool(args.force_champion),
        "actor": args.actor or f"cli:{_os_user()}",
        "force_reason": args.reason,
    }


def train_exit_code(result: dict[str, Any]) -> int:
    """0, or :data:`EXIT_REJECTED` (with a ``salesflow:`` line) when the first champion
    was rejected by the policy."""
    if result.get("action") != "reject":
        return 0
    print(
        f"salesflow: version {result['version']} of {result['model_name']} was registered "
        f"but NOT made champion (tagged rejected): {result['reason']}. Improve the model or "
        "data, or override with: salesflow train --force-champion --reason TEXT",
        file=sys.stderr,
    )
    return EXIT_REJECTED


def _cmd_rollback(args: argparse.Namespace) -> int:
    from salesflow.config.settings import load_settings
    from salesflow.governance.lifecycle import check_audit_writable, record_audit, rollback

    s = load_settings(args.env)
    name = s.model.name
    # No alias move the audit trail cannot record: the warehouse must answer first.
    check_audit_writable(s.warehouse_url, s.monitor.audit_table, s.warehouse.schema_name)
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
        env=s.env,
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
