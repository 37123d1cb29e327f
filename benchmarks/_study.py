"""What the design studies (``study_*.py``) share: the benchmark's data, and salesflow's
backtest rows from one origin with the shipped settings, some of them overridden."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from _accuracy import HOLIDAY_WEIGHT, prepare_data, read_data
from _common import HERE, describe_machine

from salesflow.data.schema import SalesData


def study_data(walmart: Path) -> tuple[SalesData, dict[str, Any]]:
    """The Walmart data after the validation gate (as the benchmark reads it), and its
    description."""
    path = HERE / "out" / "study_data.pkl"
    meta = prepare_data(walmart, path)
    return read_data(path), meta


def origin_rows(
    data: SalesData, origin: pd.Timestamp, seed: int, features: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, float]:
    """salesflow's backtest rows from ``origin`` (dev settings, XGBoost ``seed``, the
    ``features`` settings overridden; with the model's baseline column) and fit seconds."""
    from salesflow.config.settings import load_settings
    from salesflow.modelling.backtest import run_backtest
    from salesflow.modelling.training import make_forecaster

    settings = load_settings("dev")
    settings = settings.model_copy(
        update={
            "model": settings.model.model_copy(update={"seed": seed}),
            "features": settings.features.model_copy(update=features or {}),
        }
    )
    fits: list[float] = []
    bt = run_backtest(
        data,
        lambda: make_forecaster(settings),
        1,
        13,
        HOLIDAY_WEIGHT,
        origins=[origin],
        on_origin=lambda _o, model: fits.append(model.fit_seconds_),
        with_baseline=True,
    )
    return bt.frame, fits[0]


def write_study(
    name: str, meta: dict[str, Any], argv: list[str] | None, **fields: Any
) -> dict[str, Any]:
    """Write ``benchmarks/out/<name>.json`` (machine, data, command line, then ``fields``)
    and return it."""
    report = {
        "machine": describe_machine(["salesflow", "xgboost", "pandas", "numpy"]),
        "data": meta,
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        **fields,
    }
    path = HERE / "out" / f"{name}.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {path}")
    return report
