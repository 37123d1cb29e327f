"""The Rossmann (daily) accuracy benchmark: data, baselines, tasks and scores.

Protocol: for each origin T (the first forecast day) every method sees only the rows before
T and forecasts the 42 days T .. T+41 for all 1,115 stores; the opening plan, promotions and
holidays of those days are known ahead (as in ``future.csv``), so a closed day is forecast 0
by every method. Scored rows, the same for every method: open days (``Open = 1``) with
``Sales > 0`` -- the competition's rule. Metrics (``salesflow.metrics``): RMSPE (main), WMAE
with ``StateHoliday != "0"`` days weighted ``HOLIDAY_WEIGHT`` and MAE.

Each method x origin runs in a process of its own (``_rossmann_run.py``) and caches its
forecast frame (Store, Date, forecast[, lo_80, hi_80, lo_95, hi_95]) as
``<work>/<method>-<origin>.parquet`` (:func:`frame_path`); :func:`score_all` reads the
cached frames, so the report can be re-rendered and one method re-run alone. Peers
(mlforecast, statsforecast) and salesflow are in ``_rossmann_peers.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ORIGINS = ["2015-02-14", "2015-03-28", "2015-05-09"]
TUNING_ORIGIN = "2015-03-28"  # the lead tunes salesflow on this origin only
HORIZON = 42
HOLIDAY_WEIGHT = 5.0
MEDIAN_DAYS = 91  # 13 weeks
BASELINES = ["seasonal_naive_7", "seasonal_naive_364", "median_13w"]
PEERS = ["mlforecast_lgbm", "statsforecast_mstl"]
METHODS = ["salesflow", *BASELINES, *PEERS]
COLUMNS = ["Store", "Date", "DayOfWeek", "Sales", "Open", "Promo", "StateHoliday", "SchoolHoliday"]


# --- data -----------------------------------------------------------------------------------


def read_rossmann(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """train.csv.zip (StateHoliday as text) and store.csv; columns out: ``COLUMNS`` plus
    ``observed`` (True) and store.csv's as they are."""
    folder = Path(folder)
    train = pd.read_csv(
        folder / "train.csv.zip", usecols=COLUMNS, dtype={"StateHoliday": str}, parse_dates=["Date"]
    )
    stores = pd.read_csv(folder / "store.csv")
    return train.assign(observed=True)[[*COLUMNS, "observed"]], stores


def daily_panel(train: pd.DataFrame) -> pd.DataFrame:
    """Every store on every day of the data. A missing (store, day) -- the 180 stores' 184-day
    gap and one single day -- is filled with the same store's row 364 days earlier (same
    weekday) and ``observed = False``: only for peers that need a regular series (lags,
    seasonal decomposition); such rows are never scored and weigh 0 in mlforecast's fit."""
    dates = pd.date_range(train["Date"].min(), train["Date"].max(), freq="D")
    full = pd.MultiIndex.from_product([sorted(train["Store"].unique()), dates])
    panel = train.set_index(["Store", "Date"]).reindex(full)
    panel.index.names = ["Store", "Date"]
    panel = panel.reset_index()
    panel["observed"] = panel["observed"].eq(True)
    for _ in range(3):  # a gap longer than 364 days would need another year back
        missing = panel["Sales"].isna()
        if not missing.any():
            break
        back = panel[["Store", "Date"]].assign(Date=panel["Date"] - pd.Timedelta(days=364))
        prev = back.merge(panel, on=["Store", "Date"], how="left")
        fill = [c for c in COLUMNS if c not in ("Store", "Date")]
        panel.loc[missing, fill] = prev.loc[missing, fill].to_numpy()
    panel["DayOfWeek"] = panel["Date"].dt.dayofweek + 1
    ints = ["Sales", "Open", "Promo", "SchoolHoliday"]
    panel[ints] = panel[ints].astype(float).fillna(0).astype(np.int64)
    panel["StateHoliday"] = panel["StateHoliday"].fillna("0").astype(str)
    return panel


def prepare(folder: str | Path, work: Path) -> dict[str, Any]:
    """Read the folder once; write ``panel.parquet`` and ``stores.parquet`` to ``work``."""
    train, stores = read_rossmann(folder)
    panel = daily_panel(train)
    work.mkdir(parents=True, exist_ok=True)
    for name, frame in (("panel", panel), ("stores", stores)):
        tmp = work / f"{name}.parquet.tmp"  # renamed into place: a running task never
        frame.to_parquet(tmp)  # reads a half-written file
        tmp.replace(work / f"{name}.parquet")
    return {
        "rows": len(train),
        "stores": int(train["Store"].nunique()),
        "first_date": str(train["Date"].min().date()),
        "last_date": str(train["Date"].max().date()),
        "imputed_rows": int((~panel["observed"]).sum()),
    }


def window(panel: pd.DataFrame, origin: str) -> pd.DataFrame:
    """The 42 target days of every store from ``origin`` (all columns, sales included)."""
    t = pd.Timestamp(origin)
    at = (panel["Date"] >= t) & (panel["Date"] < t + pd.Timedelta(days=HORIZON))
    return panel[at].reset_index(drop=True)


def history(panel: pd.DataFrame, origin: str) -> pd.DataFrame:
    return panel[panel["Date"] < pd.Timestamp(origin)].reset_index(drop=True)


def _open_sales(hist: pd.DataFrame) -> pd.DataFrame:
    return hist[hist["observed"] & (hist["Open"] == 1) & (hist["Sales"] > 0)]


def closed_to_zero(target: pd.DataFrame, forecast: np.ndarray) -> np.ndarray:
    """Closed days are 0 (the opening plan is known ahead); forecasts never below 0."""
    return np.where(target["Open"].to_numpy() == 1, np.clip(forecast, 0, None), 0.0)


# --- baselines ------------------------------------------------------------------------------


def _store_median(hist: pd.DataFrame, target: pd.DataFrame) -> pd.Series:
    recent = hist[hist["Date"] >= hist["Date"].max() - pd.Timedelta(days=MEDIAN_DAYS - 1)]
    med = recent.groupby("Store")["Sales"].median()
    whole = hist.groupby("Store")["Sales"].median()
    return target["Store"].map(med).fillna(target["Store"].map(whole))


def seasonal_naive_7(hist: pd.DataFrame, target: pd.DataFrame) -> pd.Series:
    """Same weekday in the latest week before the origin in which the store was open with
    sales that weekday; falls back to the store's 13-week median."""
    last = _open_sales(hist).sort_values("Date").groupby(["Store", "DayOfWeek"])["Sales"].last()
    keys = pd.MultiIndex.from_frame(target[["Store", "DayOfWeek"]])
    out = pd.Series(last.reindex(keys).to_numpy(), index=target.index)
    return out.fillna(_store_median(_open_sales(hist), target))


def seasonal_naive_364(hist: pd.DataFrame, target: pd.DataFrame) -> pd.Series:
    """The store's sales 364 days before (same weekday); if that day was closed or missing,
    the same weekday 1..4 weeks earlier; then seasonal naive 7."""
    known = _open_sales(hist).set_index(["Store", "Date"])["Sales"]
    out = pd.Series(np.nan, index=target.index)
    for weeks in range(5):
        back = target["Date"] - pd.Timedelta(days=364 + 7 * weeks)
        keys = pd.MultiIndex.from_arrays([target["Store"], back])
        out = out.fillna(pd.Series(known.reindex(keys).to_numpy(), index=target.index))
    return out.fillna(seasonal_naive_7(hist, target))


def median_13w(hist: pd.DataFrame, target: pd.DataFrame) -> pd.Series:
    """Median of the store's open days with sales over the 13 weeks before the origin, by
    store x weekday x promo; falls back to store x weekday, then store."""
    o = _open_sales(hist)
    recent = o[o["Date"] >= o["Date"].max() - pd.Timedelta(days=MEDIAN_DAYS - 1)]
    out = pd.Series(np.nan, index=target.index)
    for keys in (["Store", "DayOfWeek", "Promo"], ["Store", "DayOfWeek"]):
        med = recent.groupby(keys)["Sales"].median()
        idx = pd.MultiIndex.from_frame(target[keys])
        out = out.fillna(pd.Series(med.reindex(idx).to_numpy(), index=target.index))
    return out.fillna(_store_median(o, target))


BASELINE_FUNCS = {
    "seasonal_naive_7": seasonal_naive_7,
    "seasonal_naive_364": seasonal_naive_364,
    "median_13w": median_13w,
}


def frame_path(work: str | Path, method: str, origin: str) -> Path:
    """Where one method's forecast frame from one origin is cached."""
    return Path(work) / f"{method}-{origin}.parquet"


# --- scores ---------------------------------------------------------------------------------


def rmspe(y, yhat) -> float:
    """sqrt(mean(((y - yhat) / y)^2)) over rows with y > 0 (salesflow.metrics' if present)."""
    try:
        from salesflow.modelling.metrics import rmspe as shipped
    except ImportError:
        y, yhat = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
        keep = y > 0
        return float(np.sqrt(np.mean(((y[keep] - yhat[keep]) / y[keep]) ** 2)))
    return float(shipped(y, yhat))


def scored_rows(panel: pd.DataFrame, origins: list[str]) -> pd.DataFrame:
    """Rows every method is scored on: observed open days with sales > 0 in each window.
    Columns out: origin, Store, Date, y, is_holiday."""
    parts = []
    for o in origins:
        w = window(panel, o)
        w = w[w["observed"] & (w["Open"] == 1) & (w["Sales"] > 0)]
        parts.append(
            pd.DataFrame(
                {
                    "origin": o,
                    "Store": w["Store"],
                    "Date": w["Date"],
                    "y": w["Sales"].astype(float),
                    "is_holiday": w["StateHoliday"] != "0",
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _metrics(rows: pd.DataFrame, col: str) -> dict[str, float]:
    from salesflow.modelling.metrics import mae, wmae

    y, f = rows["y"], rows[col]
    out = {
        "rmspe": rmspe(y, f),
        "wmae": wmae(y, f, rows["is_holiday"], HOLIDAY_WEIGHT),
        "mae": mae(y, f),
        "n": len(rows),
    }
    if "lo_80" in rows:
        for level in (80, 95):
            inside = (rows[f"lo_{level}"] <= y) & (y <= rows[f"hi_{level}"])
            out[f"coverage_{level}"] = float(inside.mean())
            # sharpness beside coverage: wider bounds cover more
            out[f"width_{level}"] = float((rows[f"hi_{level}"] - rows[f"lo_{level}"]).mean())
    return out


def score_method(work: Path, rows: pd.DataFrame, method: str) -> dict[str, Any]:
    """Per origin and pooled metrics of one method's cached frames; origins without a
    frame are listed under ``missing_origins`` (pooled only over complete sets). A scored
    row the method left without a forecast gets seasonal naive 364's (``fallback_rows``),
    so every method is scored on the same rows."""
    parts, missing, fallback = [], [], {}
    for o in rows["origin"].unique():
        path = frame_path(work, method, o)
        if not path.exists():
            missing.append(o)
            continue
        fc = pd.read_parquet(path).assign(origin=o)
        part = rows[rows["origin"] == o].merge(fc, on=["origin", "Store", "Date"], how="left")
        holes = part["forecast"].isna()
        fallback[o] = int(holes.sum())
        if holes.any():
            sn = pd.read_parquet(frame_path(work, "seasonal_naive_364", o))
            sn = part[["Store", "Date"]].merge(sn, on=["Store", "Date"], how="left")
            part.loc[holes, "forecast"] = sn.loc[holes.to_numpy(), "forecast"].to_numpy()
        parts.append(part)
    if not parts:
        return {"skipped": "no forecast frame"}
    joined = pd.concat(parts, ignore_index=True)
    by = {o: _metrics(g, "forecast") for o, g in joined.groupby("origin")}
    out: dict[str, Any] = {"by_origin": by, "fallback_rows": fallback}
    if missing:
        out["missing_origins"] = missing
    else:
        out["pooled"] = _metrics(joined, "forecast")
        out.update({k: v for k, v in out["pooled"].items() if k != "n"})
    return out


def score_all(work: Path, origins: list[str]) -> dict[str, Any]:
    """Every method's scores on the same rows (see :func:`scored_rows`)."""
    panel = pd.read_parquet(work / "panel.parquet")
    rows = scored_rows(panel, origins)
    methods = {m: score_method(work, rows, m) for m in METHODS}
    sn = methods["seasonal_naive_364"].get("rmspe")
    for m in methods.values():
        if sn and "rmspe" in m:
            m["ratio_to_seasonal_naive_364"] = m["rmspe"] / sn
    counts = rows.groupby("origin").size().to_dict()
    return {"rows": int(len(rows)), "rows_by_origin": counts, "methods": methods}
