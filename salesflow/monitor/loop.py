"""The monitoring loop's judgement: realized accuracy per model version on recent actuals,
compared row for row, and what the monitor should do about it. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from salesflow.modelling.metrics import wmae


@dataclass(frozen=True)
class RealizedComparison:
    """Realized WMAE of the champion (and the previous champion, on the same rows)."""

    current_version: str
    current_wmae: float | None
    previous_version: str | None
    previous_wmae: float | None
    n_rows: int
    window_start: str | None
    window_end: str | None


def latest_forecast_per_target(joined: pd.DataFrame) -> pd.DataFrame:
    """Per (model_version, unique_id, target_date) the forecast from the latest origin:
    the one a user would have acted on. Columns in/out: the joined warehouse rows."""
    order = joined.sort_values("forecast_origin")
    return order.drop_duplicates(["model_version", "unique_id", "target_date"], keep="last")


def compare_realized(
    joined: pd.DataFrame,
    current_version: str,
    previous_version: str | None,
    periods: int,
    holiday_weight: float = 5.0,
) -> RealizedComparison:
    """Realized WMAE over the last ``periods`` target dates with actuals, for the champion
    and (on exactly the same series and dates) the previous champion.

    ``joined``: warehouse forecast rows with actuals (unique_id, target_date, forecast,
    model_version, forecast_origin, y, is_holiday).
    """
    rows = latest_forecast_per_target(joined)
    rows = rows.assign(model_version=rows["model_version"].astype(str))
    cur = rows[rows["model_version"] == str(current_version)]
    if cur.empty:
        return RealizedComparison(str(current_version), None, previous_version, None, 0, None, None)
    dates = sorted(cur["target_date"].unique())[-periods:]
    cur = cur[cur["target_date"].isin(dates)].set_index(["unique_id", "target_date"])
    prev = None
    if previous_version is not None:
        p = rows[rows["model_version"] == str(previous_version)]
        p = p.set_index(["unique_id", "target_date"])
        common = cur.index.intersection(p.index)
        if len(common):
            cur, prev = cur.loc[common], p.loc[common]

    def _w(f: pd.DataFrame) -> float:
        return wmae(f["y"], f["forecast"], f["is_holiday"], holiday_weight)

    return RealizedComparison(
        current_version=str(current_version),
        current_wmae=_w(cur),
        previous_version=previous_version,
        previous_wmae=_w(prev) if prev is not None else None,
        n_rows=len(cur),
        window_start=str(pd.Timestamp(min(dates)).date()),
        window_end=str(pd.Timestamp(max(dates)).date()),
    )


@dataclass(frozen=True)
class MonitorVerdict:
    """What the monitor found: which events to emit, and whether to roll back."""

    drift_detected: bool
    degraded: bool
    events: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
