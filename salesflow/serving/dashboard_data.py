"""What the dashboard shows, as plain frames: one series' history, latest forecast with its
80/95 % bands and the actuals that arrived after the origin; totals per store; realized
accuracy and interval coverage by model version; the last monitor run's drift status.

No Streamlit here: the pages in :mod:`salesflow.serving.dashboard` only draw these frames.
Reads go straight to the warehouse and registry (no API server needed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from salesflow.serving.queries import FORECAST_FIELDS

BANDS = ("lo_80", "hi_80", "lo_95", "hi_95")
MONITOR_SUMMARY = "summary.json"  # written by tasks.monitor.write_monitor_summary
TABLE_COLUMNS = ["target_date", "horizon", "forecast", *BANDS, "actual"]


@dataclass(frozen=True)
class SeriesView:
    """One series: recent history before the origin, the forecast, actuals from it on."""

    unique_id: str
    origin: pd.Timestamp | None
    history: pd.DataFrame  # ds, y (before the origin)
    forecast: pd.DataFrame  # target_date, horizon, forecast, lo/hi 80/95, model_version
    actuals: pd.DataFrame  # ds, y (from the origin on)

    @property
    def table(self) -> pd.DataFrame:
        """The forecast rows with the actual beside each date that has one (else NaN)."""
        act = self.actuals.rename(columns={"ds": "target_date", "y": "actual"})
        out = self.forecast.merge(act, on="target_date", how="left")
        if "actual" not in out:
            out["actual"] = np.nan
        return out[[c for c in TABLE_COLUMNS if c in out.columns]].reset_index(drop=True)


def key_names(forecasts: pd.DataFrame) -> list[str]:
    """The series key columns of a :func:`~salesflow.serving.queries.series_forecast` frame
    (every column that is not a forecasts-table field), in their order."""
    return [c for c in forecasts.columns if c not in FORECAST_FIELDS]


def series_keys(forecasts: pd.DataFrame) -> pd.DataFrame:
    """One row per series: ``unique_id`` and its key columns, sorted by the keys (numbers
    numerically, e.g. store 2 before store 10)."""
    names = key_names(forecasts)
    if forecasts.empty:
        return pd.DataFrame(columns=["unique_id", *names])
    out = forecasts.drop_duplicates("unique_id")[["unique_id", *names]].astype(str)
    order = [_sortable(out[c]).to_numpy() for c in reversed(names)]
    idx = np.lexsort(tuple(order)) if order else np.arange(len(out))
    return out.iloc[idx].reset_index(drop=True)


def _sortable(values: pd.Series) -> pd.Series:
    num = pd.to_numeric(values, errors="coerce")
    if num.notna().all():
        return num
    return values.rank(method="dense")


def pick_series(keys: pd.DataFrame, chosen: dict[str, str]) -> str | None:
    """The ``unique_id`` whose key columns equal ``chosen`` (None when no series matches)."""
    mask = pd.Series(True, index=keys.index)
    for col, value in chosen.items():
        mask &= keys[col] == value
    hits = keys.loc[mask, "unique_id"]
    return None if hits.empty else str(hits.iloc[0])


def series_view(
    history: pd.DataFrame | None,
    forecasts: pd.DataFrame,
    unique_id: str,
    history_periods: int = 104,
) -> SeriesView:
    """The view of ``unique_id``: the last ``history_periods`` observations before its first
    forecast date (the origin), the forecast rows by target date, and the observations
    from the origin on (the actuals that arrived)."""
    fc = forecasts[forecasts["unique_id"] == unique_id].sort_values("target_date")
    origin = pd.Timestamp(fc["forecast_origin"].iloc[0]) if not fc.empty else None
    cols = ["target_date", "horizon", "forecast", *BANDS, "model_version"]
    fc = fc[[c for c in cols if c in fc.columns]].reset_index(drop=True)
    empty = pd.DataFrame({"ds": pd.Series(dtype="datetime64[ns]"), "y": pd.Series(dtype=float)})
    if history is None or history.empty:
        return SeriesView(unique_id, origin, empty, fc, empty)
    h = history.loc[history["unique_id"] == unique_id, ["ds", "y"]].sort_values("ds")
    # The origin is the first forecast period: history before it, actuals from it on.
    first = fc["target_date"].min() if not fc.empty else h["ds"].max() + pd.Timedelta(1, "ns")
    before = h[h["ds"] < first].tail(history_periods).reset_index(drop=True)
    after = h[h["ds"] >= first].reset_index(drop=True)
    return SeriesView(unique_id, origin, before, fc, after)


def chart_frames(view: SeriesView) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long frame of lines (``ds``, ``value``, ``what``: history / forecast / actual) and the
    band frame (``ds`` and the 80/95 % bounds) of one series, for a layered chart."""
    parts = [
        view.history.assign(what="history").rename(columns={"y": "value"}),
        view.forecast[["target_date", "forecast"]]
        .rename(columns={"target_date": "ds", "forecast": "value"})
        .assign(what="forecast"),
        view.actuals.assign(what="actual").rename(columns={"y": "value"}),
    ]
    lines = pd.concat([p[["ds", "value", "what"]] for p in parts if not p.empty])
    bands = view.forecast.rename(columns={"target_date": "ds"})
    return lines.reset_index(drop=True), bands[["ds", *[b for b in BANDS if b in bands]]]


def store_summary(totals: pd.DataFrame) -> pd.DataFrame:
    """:func:`~salesflow.serving.queries.store_totals` rows (store x target date) summed over
    the horizon per store: series, first and last target date, total; in store order."""
    cols = ["store", "series", "first_date", "last_date", "forecast_total"]
    if totals.empty:
        return pd.DataFrame(columns=cols)
    out = totals.groupby("store", sort=False).agg(
        series=("n_series", "max"),
        first_date=("target_date", "min"),
        last_date=("target_date", "max"),
        forecast_total=("forecast", "sum"),
    )
    return out.reset_index()[cols]


def top_stores(totals: pd.DataFrame, n: int) -> pd.DataFrame:
    """The :func:`~salesflow.serving.queries.store_totals` rows of the ``n`` stores with
    the largest totals over the horizon (a chart of a thousand lines says nothing)."""
    if totals.empty:
        return totals
    best = totals.groupby("store")["forecast"].sum().nlargest(n).index
    return totals[totals["store"].isin(best)].reset_index(drop=True)


def accuracy_by_origin(acc: pd.DataFrame) -> pd.DataFrame:
    """Realized accuracy rows (per version, origin, horizon) pooled per model version and
    origin: metrics weighted by each horizon's row count ``n``; coverage as shares."""
    cols = ["model_version", "forecast_origin", "n", "wmae", "mae", "rmse", "bias"]
    cov = [c for c in ("coverage_80", "coverage_95") if c in acc.columns]
    if acc.empty:
        return pd.DataFrame(columns=cols + cov)
    metrics = ["wmae", "mae", "bias", *cov]

    def pool(g: pd.DataFrame) -> pd.Series:
        w = g["n"].astype(float)
        out = {m: float(np.average(g[m], weights=w)) for m in metrics}
        out["rmse"] = float(np.sqrt(np.average(g["rmse"] ** 2, weights=w)))
        out["n"] = int(w.sum())
        return pd.Series(out)

    grouped = acc.groupby(["model_version", "forecast_origin"])[["n", "rmse", *metrics]]
    out = grouped.apply(pool).reset_index()
    out["n"] = out["n"].astype(int)
    return out[cols + cov].sort_values(["forecast_origin", "model_version"]).reset_index(drop=True)


@dataclass
class MonitorRun:
    """The drift status one monitor run left in its report folder."""

    folder: Path
    written_at: str
    data_date: str
    flow_run_id: str | None
    champion_version: str | None
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def detected(self) -> list[str]:
        return [k for k, d in self.drift.items() if d.get("detected")]

    def reports(self) -> dict[str, Path]:
        """kind -> the HTML report of that check (only those that exist)."""
        out = {k: self.folder / str(d["report"]) for k, d in self.drift.items() if d.get("report")}
        return {k: p for k, p in out.items() if p.is_file()}

    def table(self) -> pd.DataFrame:
        """One row per check: drift detected, columns drifted of all, share, which."""
        rows = [
            {
                "check": kind,
                "drift": "DETECTED" if d.get("detected") else "no drift",
                "drifted": f"{d.get('n_drifted', 0)} of {d.get('n_columns', 0)}",
                "share": f"{100 * float(d.get('share_drifted', 0)):.0f} %",
                "columns": ", ".join(d.get("drifted_columns") or []) or "none",
            }
            for kind, d in self.drift.items()
        ]
        return pd.DataFrame(rows, columns=["check", "drift", "drifted", "share", "columns"])


def last_monitor_run(report_root: Path) -> MonitorRun | None:
    """The monitor run whose ``summary.json`` (under ``report_root``) was written last;
    None when no run left one. Unreadable summaries are skipped."""
    runs = []
    for path in Path(report_root).glob(f"*/{MONITOR_SUMMARY}"):
        try:
            s = json.loads(path.read_text())
            runs.append(
                MonitorRun(
                    folder=path.parent,
                    written_at=str(s["written_at"]),
                    data_date=str(s["data_date"]),
                    flow_run_id=s.get("flow_run_id"),
                    champion_version=s.get("champion_version"),
                    drift=dict(s.get("drift") or {}),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(runs, key=lambda r: r.written_at) if runs else None


def audit_view(audit: pd.DataFrame) -> pd.DataFrame:
    """Audit rows newest first, with the columns a planner reads."""
    cols = ["at", "action", "from_version", "to_version", "reason", "actor", "env"]
    if audit.empty:
        return pd.DataFrame(columns=cols)
    out = audit.sort_values("at", ascending=False, kind="stable")
    return out[[c for c in cols if c in out.columns]].reset_index(drop=True)


def example_batch_csv(history: pd.DataFrame, keys: list[str], n: int = 3) -> str:
    """A batch input CSV naming the first ``n`` series of ``history`` (one column per key)."""
    return history[keys].drop_duplicates().head(n).to_csv(index=False)


def run_batch(
    model: Any, version: str, model_name: str, data: Any, text: str, max_series: int
) -> Any:
    """The champion's forecasts of the series named in the CSV ``text``
    (:func:`salesflow.serving.predict_batch.predict_batch_csv`), each row tagged with the
    model name and version. Raises ``PredictInputError`` for a file that cannot be used."""
    from salesflow.serving.predict_batch import predict_batch_csv

    extra = {"model_name": model_name, "model_version": version}
    return predict_batch_csv(model, data, text, max_series, extra_columns=extra)


def row_errors(errors: list[Any]) -> pd.DataFrame:
    """The rows a batch left out: CSV line (the header is line 1), series, why; as text."""
    rows = [
        {
            "line": "–" if e.row is None else str(e.row),
            "series": ", ".join(f"{k}={v}" for k, v in (e.series or {}).items()) or "–",
            "error": e.message,
        }
        for e in errors
    ]
    return pd.DataFrame(rows, columns=["line", "series", "error"])
