"""The ``salesflow`` command: run the flows from a terminal.

salesflow train [--env dev] [--source walmart --path DIR] [--as-of DATE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from salesflow.cli_lifecycle import add_rollback_command


def _print_training(result: dict[str, Any]) -> None:
    m = result["metrics"]
    alias = result["alias"] or "(champion alias unchanged)"
    print(f"\nRegistered {result['model_name']} version {result['version']} {alias}")
    print(f"Backtest origins: {', '.join(result['origins'])}")
    print(f"{'model':<16}{'WMAE':>12}{'MAE':>12}{'RMSE':>12}{'bias':>10}{'vs s.naive':>12}")
    for name, label in (
        ("forecast", "salesflow"),
        ("seasonal_naive", "seasonal naive"),
        ("naive", "naive"),
    ):
        r = m[name]
        print(
            f"{label:<16}{r['wmae']:>12,.1f}{r['mae']:>12,.1f}{r['rmse']:>12,.1f}"
            f"{r['bias']:>10,.1f}{r['wmae_vs_seasonal_naive']:>12.3f}"
        )


def _cmd_train(args: argparse.Namespace) -> int:
    from flows.training import training_flow

    overrides = json.loads(args.set) if args.set else None
    result = training_flow(
        env=args.env, source=args.source, path=args.path, as_of=args.as_of, overrides=overrides
    )
    _print_training(result)
    return 0


def _cmd_forecast(args: argparse.Namespace) -> int:
    from flows.batch_forecast import batch_forecast_flow

    overrides = json.loads(args.set) if args.set else None
    r = batch_forecast_flow(
        env=args.env,
        source=args.source,
        path=args.path,
        as_of=args.as_of,
        origin=args.origin,
        overrides=overrides,
    )
    print(
        f"\nWrote {r['rows_written']:,} forecast rows ({r['series']:,} series, origin "
        f"{r['origin']}) to {r['table']} with {r['model_name']} version {r['model_version']}"
    )
    return 0


def _cmd_monitor(args: argparse.Namespace) -> int:
    from flows.monitor import monitor_flow

    r = monitor_flow(**_flow_args(args))
    print(
        f"\nVersion {r['model_version']}: realized WMAE {r['realized_wmae']}, backtest "
        f"WMAE {r['backtest_wmae']}, degraded: {r['degraded']}"
    )
    for kind, cols in r["drifted_columns"].items():
        print(f"{kind} drift: {'DRIFT' if r['drift'][kind] else 'no'} {', '.join(cols)}")
    print(f"events: {', '.join(r['events']) or 'none'}; rolled back: {r['rolled_back']}")
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    from flows.retrain import retrain_flow

    r = retrain_flow(**_flow_args(args), reason="salesflow retrain (CLI)")
    print(f"\n{r['action'].upper()} challenger version {r['challenger_version']}: {r['reason']}")
    return 0


def _flow_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "env": args.env,
        "source": args.source,
        "path": args.path,
        "as_of": args.as_of,
        "overrides": json.loads(args.set) if args.set else None,
    }


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", help="config environment: configs/<env>.yaml (default: dev)")
    p.add_argument("--source", choices=["synthetic", "walmart", "long", "sql"])
    p.add_argument("--path", help="data folder/file for the walmart and long sources")
    p.add_argument("--as-of", dest="as_of", help="use data up to this date (YYYY-MM-DD)")
    p.add_argument("--set", help='JSON of other settings, e.g. \'{"model": {"horizon": 13}}\'')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="salesflow", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, backtest and register a model (training flow)")
    _data_options(t)
    t.set_defaults(func=_cmd_train)
    f = sub.add_parser("forecast", help="forecast every series with the champion (batch flow)")
    _data_options(f)
    f.add_argument("--origin", help="first forecast period (default: after the last data)")
    f.set_defaults(func=_cmd_forecast)
    m = sub.add_parser("monitor", help="realized accuracy, drift checks, events, rollback")
    _data_options(m)
    m.set_defaults(func=_cmd_monitor)
    r = sub.add_parser("retrain", help="train a challenger; promote it only if it is better")
    _data_options(r)
    r.set_defaults(func=_cmd_retrain)
    add_rollback_command(sub)
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
    from salesflow.settings import SettingsError

    args = build_parser().parse_args(argv)
    from salesflow.registry import ChampionNotFound, ChampionUnreadable
    from salesflow.validation import DataValidationError
    from salesflow.warehouse import WarehouseUnavailable

    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"salesflow: {exc}", file=sys.stderr)
        return 2
    except (
        DataValidationError,
        ChampionNotFound,
        ChampionUnreadable,
        WarehouseUnavailable,
        FileNotFoundError,
    ) as exc:
        print(f"salesflow: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
