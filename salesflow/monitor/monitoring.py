"""Realized accuracy: forecasts joined to the actuals that have since arrived, scored per
model version, origin and horizon, stored in the warehouse, and judged against the backtest.

Pure functions over DataFrames, plus :func:`write_accuracy`, which goes through the
warehouse's transactional upsert (:func:`salesflow.warehouse.write_frame`).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from salesflow.config.settings import MonitorSection
from salesflow.data.schema import DATE, HOLIDAY, ID, TARGET
from salesflow.modelling.metrics import score_by
from salesflow.storage.warehouse import WriteResult, check_identifier, write_frame

ACCURACY_KEY = ("model_name", "model_version", "forecast_origin", "horizon")
ACCURACY_METRICS = ("wmae", "mae", "rmse", "bias", "coverage_80", "coverage_95")
_LEVELS = (80, 95)


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    if missing := [c for c in columns if c not in frame.columns]:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {list(frame.columns)}")


def join_actuals(forecasts: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Forecast rows that have an actual, with the actual's ``y`` and ``is_holiday``.

    ``forecasts``: warehouse layout (``unique_id``, ``forecast_origin``, ``target_date``,
    ``horizon``, ``forecast``, optional ``lo_80``...``hi_95``, ``model_name``,
    ``model_version``, ...). ``history``: ``unique_id``, ``ds``, ``y``, ``is_holiday``.
    Out: the forecast columns plus ``y`` and ``is_holiday``; rows without an actual (or with
    a null ``y``) are dropped.
    """
    _require(forecasts, [ID, "target_date", "forecast"], "forecasts")
    _require(history, [ID, DATE, TARGET, HOLIDAY], "history")
    actuals = history[[ID, DATE, TARGET, HOLIDAY]].dropna(subset=[TARGET])
    if actuals.duplicated([ID, DATE]).any():
        raise ValueError("history has more than one row per (unique_id, ds)")
    actuals = actuals.rename(columns={DATE: "target_date"}).assign(
        target_date=lambda f: pd.to_datetime(f["target_date"]).astype("datetime64[ns]"),
        **{ID: lambda f: f[ID].astype(str)},
    )
    left = forecasts.drop(columns=[c for c in (TARGET, HOLIDAY) if c in forecasts])
    left = left.assign(
        target_date=pd.to_datetime(left["target_date"]).astype("datetime64[ns]"),
        **{ID: left[ID].astype(str)},
    )
    joined = left.merge(actuals, on=[ID, "target_date"], how="inner", validate="many_to_one")
    joined[HOLIDAY] = joined[HOLIDAY].astype(bool)
    return joined.reset_index(drop=True)


def _coverage(joined: pd.DataFrame, by: list[str], level: int) -> pd.Series:
    """Share of actuals inside [lo, hi] per group, over rows with both bounds (else NaN)."""
    lo, hi = f"lo_{level}", f"hi_{level}"
    if lo not in joined or hi not in joined:
        return pd.Series(np.nan, index=joined.groupby(by, sort=True).size().index)
    bounded = joined[lo].notna() & joined[hi].notna()
    inside = (joined[TARGET] >= joined[lo]) & (joined[TARGET] <= joined[hi])
    parts = pd.DataFrame({"inside": inside.where(bounded).astype(float)})
    return parts.groupby([joined[c] for c in by], sort=True)["inside"].mean()


def _score(joined: pd.DataFrame, by: list[str], holiday_weight: float) -> pd.DataFrame:
    _require(joined, [*by, TARGET, HOLIDAY, "forecast"], "joined forecasts")
    if joined[[TARGET, "forecast"]].isna().any().any():
        raise ValueError("joined forecasts have null y or forecast; use join_actuals first")
    out = score_by(joined, by, ["forecast"], holiday_weight).drop(columns="model")
    out = out.set_index(by)
    for level in _LEVELS:
        out[f"coverage_{level}"] = _coverage(joined, by, level)
    out["n"] = out["n"].astype("int64")
    return out.reset_index()[[*by, *ACCURACY_METRICS, "n"]]


def realized_accuracy(joined: pd.DataFrame, holiday_weight: float = 5.0) -> pd.DataFrame:
    """One row per (model_name, model_version, forecast_origin, horizon).

    In: :func:`join_actuals`' output. Out columns: the four keys, ``wmae``, ``mae``,
    ``rmse``, ``bias`` (forecast - actual), ``coverage_80``, ``coverage_95`` (share of actuals
    inside the interval; NaN when its bounds are missing) and ``n`` (rows scored).
    """
    if joined.empty:
        return pd.DataFrame(columns=[*ACCURACY_KEY, *ACCURACY_METRICS, "n"])
    return _score(joined, list(ACCURACY_KEY), holiday_weight)


def summarize_accuracy(joined: pd.DataFrame, holiday_weight: float = 5.0) -> dict[str, Any]:
    """Overall accuracy per model version: ``{version: {wmae, mae, rmse, bias, coverage_80,
    coverage_95, n}}``, JSON-safe (a NaN coverage becomes None)."""
    if joined.empty:
        return {}
    scored = _score(
        joined.assign(model_version=joined["model_version"].astype(str)),
        ["model_version"],
        holiday_weight,
    )
    return {
        row["model_version"]: {
            **{m: _json(row[m]) for m in ACCURACY_METRICS},
            "n": int(row["n"]),
        }
        for row in scored.to_dict("records")
    }


def _json(value: Any) -> float | None:
    v = float(value)
    return None if math.isnan(v) else v


def accuracy_table(name: str = "forecast_accuracy", schema: str | None = None) -> sa.Table:
    """The realized-accuracy table: key (model_name, model_version, forecast_origin,
    horizon), the metrics, ``n`` and ``computed_at`` (UTC)."""
    check_identifier(name, "table")
    if schema is not None:
        check_identifier(schema, "schema")
    real = sa.Double
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("forecast_origin", sa.Date, nullable=False),
        sa.Column("horizon", sa.Integer, nullable=False),
        *(sa.Column(m, real, nullable=False) for m in ("wmae", "mae", "rmse", "bias")),
        *(sa.Column(f"coverage_{lv}", real, nullable=True) for lv in _LEVELS),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*ACCURACY_KEY),
        schema=schema,
    )


def write_accuracy(
    url: str,
    frame: pd.DataFrame,
    table_name: str = "forecast_accuracy",
    schema: str | None = None,
) -> WriteResult:
    """Upsert :func:`realized_accuracy` rows in one transaction; ``computed_at`` is set here.

    Re-running replaces the rows of the same key (a later run, with more actuals, updates
    them). Raises ``ValueError`` for a bad frame, ``WarehouseUnavailable`` when unreachable.
    """
    out = frame.assign(computed_at=pd.Timestamp(dt.datetime.now(dt.UTC)))
    return write_frame(url, out, accuracy_table(table_name, schema), ACCURACY_KEY)


def is_degraded(realized_wmae: float, backtest_wmae: float, cfg: MonitorSection) -> bool:
    """True when realized WMAE > ``cfg.max_wmae_vs_backtest`` x the backtest WMAE."""
    for name, v in (("realized_wmae", realized_wmae), ("backtest_wmae", backtest_wmae)):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return realized_wmae > cfg.max_wmae_vs_backtest * backtest_wmae
