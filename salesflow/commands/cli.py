"""The ``salesflow`` command: run the flows from a terminal.

salesflow train [--env dev] [--source walmart --path DIR] [--as-of DATE]
salesflow serve | dashboard [--env dev] [--port N]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from salesflow.commands.cli_errors import (
    Parser,
    check_before_flow,
    parse_date,
    parse_overrides,
    quiet_user_tracebacks,
    report,
)
from salesflow.commands.cli_lifecycle import (
    add_rollback_command,
    add_train_gate_options,
    train_exit_code,
    train_gate_args,
)
from salesflow.commands.cli_status import FLOW_COMMANDS, add_status_command, run_tags
from salesflow.serving.cli_dashboard import add_dashboard_command
from salesflow.serving.cli_serve import add_serve_command


def _label(model: str) -> str:
    if model.startswith("seasonal_naive_"):
        return f"s.naive {model.removeprefix('seasonal_naive_')}"
    return {"forecast": "salesflow", "seasonal_naive": "seasonal naive"}.get(model, model)


def _ratio(value: float | None) -> str:
    """A ratio (RMSPE, WMAE ratio) to 3 decimals; n/a when it could not be computed."""
    if value is None or value != value:
        return "n/a"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"


def _print_training(result: dict[str, Any]) -> None:
    m = result["metrics"]
    alias = result["alias"] or "(champion alias unchanged)"
    print(f"\nRegistered {result['model_name']} version {result['version']} {alias}")
    print(f"Backtest origins: {', '.join(result['origins'])}")
    print(
        f"{'model':<16}{'WMAE':>12}{'MAE':>12}{'RMSE':>12}{'bias':>10}{'vs s.naive':>12}"
        f"{'RMSPE':>10}"
    )
    for name, r in m.items():
        print(
            f"{_label(name):<16}{r['wmae']:>12,.1f}{r['mae']:>12,.1f}{r['rmse']:>12,.1f}"
            f"{r['bias']:>10,.1f}{r['wmae_vs_seasonal_naive']:>12.3f}{_ratio(r.get('rmspe')):>10}"
        )
    rows = result.get("by_origin") or []
    if rows:
        print("\nPer origin: WMAE of salesflow and seasonal naive, their ratio, RMSPE of each")
        print(
            f"{'origin':<16}{'salesflow':>12}{'s.naive':>12}{'vs s.naive':>12}"
            f"{'RMSPE sf':>10}{'RMSPE sn':>10}"
        )
    for r in rows:
        print(
            f"{r['origin']:<16}{_num(r['forecast_wmae']):>12}{_num(r['seasonal_naive_wmae']):>12}"
            f"{_ratio(r['wmae_vs_seasonal_naive']):>12}{_ratio(r['forecast_rmspe']):>10}"
            f"{_ratio(r['seasonal_naive_rmspe']):>10}"
        )


def _cmd_train(args: argparse.Namespace) -> int:
    from flows.training import training_flow

    overrides = parse_overrides(args.set)
    result = training_flow(
        env=args.env,
        source=args.source,
        path=args.path,
        as_of=args.as_of,
        overrides=overrides,
        **train_gate_args(args),
    )
    _print_training(result)
    return train_exit_code(result)


def _cmd_forecast(args: argparse.Namespace) -> int:
    from flows.batch_forecast import batch_forecast_flow

    overrides = parse_overrides(args.set)
    r = batch_forecast_flow(
        env=args.env,
        source=args.source,
        path=args.path,
        as_of=args.as_of,
        origin=args.origin,
        overrides=overrides,
        replace_origin=args.replace_origin,
    )
    print(
        f"\nWrote {r['rows_written']:,} forecast rows ({r['series']:,} series, origin "
        f"{r['origin']}) to {r['table']} with {r['model_name']} version {r['model_version']}"
    )
    print(r["write_summary"])
    return 0


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _cmd_monitor(args: argparse.Namespace) -> int:
    from flows.monitor import monitor_flow

    r = monitor_flow(**_flow_args(args))
    print(
        f"\nVersion {r['model_version']}: realized WMAE {_num(r['realized_wmae'])}, backtest "
        f"WMAE {_num(r['backtest_wmae'])}, degraded: {r['degraded']}"
    )
    for kind, cols in r["drifted_columns"].items():
        print(f"{kind} drift: {'DRIFT' if r['drift'][kind] else 'no'} {', '.join(cols)}")
    print(f"events: {', '.join(r['events']) or 'none'}; rolled back: {r['rolled_back']}")
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    from flows.retrain import retrain_flow

    r = retrain_flow(**_flow_args(args), reason="salesflow retrain (CLI)")
    print(f"\n{r['action'].upper()} challenger version {r['challenger_version']}: {r['reason']}")
    if r["action"] == "promote" and r.get("refit_version"):
        print(f"Champion: version {r['to_version']}, its refit on all the data")
    return 0


def _flow_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "env": args.env,
        "source": args.source,
        "path": args.path,
        "as_of": args.as_of,
        "overrides": parse_overrides(args.set),
    }


def _check_first(args: argparse.Namespace) -> None:
    """What needs no flow (``--set``, dates, settings, files, folders, MLflow server) is
    checked before Prefect is even imported: a doomed run stops here in seconds."""
    if args.command in FLOW_COMMANDS:
        overrides = parse_overrides(args.set)
        parse_date(getattr(args, "origin", None), "--origin")
        check_before_flow(args.env, args.command, args.source, args.path, args.as_of, overrides)
        quiet_user_tracebacks()


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", help="config environment: configs/<env>.yaml (default: dev)")
    p.add_argument("--source", choices=["synthetic", "walmart", "long", "sql"])
    p.add_argument("--path", help="data folder/file for the walmart and long sources")
    p.add_argument("--as-of", dest="as_of", help="use data up to this date (YYYY-MM-DD)")
    p.add_argument("--set", help='JSON of other settings, e.g. \'{"model": {"horizon": 13}}\'')


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="salesflow", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, backtest and register a model (training flow)")
    _data_options(t)
    add_train_gate_options(t)
    t.set_defaults(func=_cmd_train)
    f = sub.add_parser("forecast", help="forecast every series with the champion (batch flow)")
    _data_options(f)
    f.add_argument("--origin", help="first forecast period (default: after the last data)")
    f.add_argument(
        "--replace-origin",
        action="store_true",
        help="also delete the origin's forecasts of series this run does not score "
        "(default: they are kept, e.g. after a partial extract)",
    )
    f.set_defaults(func=_cmd_forecast)
    m = sub.add_parser("monitor", help="realized accuracy, drift checks, events, rollback")
    _data_options(m)
    m.set_defaults(func=_cmd_monitor)
    r = sub.add_parser("retrain", help="train a challenger; promote it only if it is better")
    _data_options(r)
    r.set_defaults(func=_cmd_retrain)
    add_rollback_command(sub)
    add_status_command(sub)
    add_serve_command(sub)
    add_dashboard_command(sub)
    return p


# No phoning home from a batch job: this machine class often has no internet at all.
_QUIET_ENV = {
    # XGBoost's OpenMP threads spin while idle: 25x slower fits on a busy 2-core machine.
    "OMP_WAIT_POLICY": "PASSIVE",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
}


def main(argv: list[str] | None = None) -> int:
    for k, v in _QUIET_ENV.items():
        os.environ.setdefault(k, v)
    # Every failure ends in one "salesflow: ..." line: exit 2 for a user error (a setting,
    # file, column, date), 1 for anything else (traceback in the Prefect logs, or here
    # with SALESFLOW_DEBUG=1).
    try:
        args = build_parser().parse_args(argv)
        _check_first(args)
        with run_tags(args):
            return args.func(args)
    except Exception as exc:  # noqa: BLE001 - reported as one line with its exit code
        return report(exc)


if __name__ == "__main__":
    sys.exit(main())
