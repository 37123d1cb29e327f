"""Forecast accuracy metrics. WMAE is the Walmart competition's: MAE with holiday weeks
weighted ``holiday_weight`` (5) and other weeks 1. RMSPE is the Rossmann competition's: the
root mean squared relative error over rows with sales > 0 only."""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("wmae", "mae", "rmse", "bias", "rmspe")


def _arrays(y, yhat) -> tuple[np.ndarray, np.ndarray]:
    y, yhat = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    if y.shape != yhat.shape:
        raise ValueError(f"y has shape {y.shape} but yhat has {yhat.shape}")
    if y.size == 0:
        raise ValueError("no rows to score")
    if np.isnan(y).any() or np.isnan(yhat).any():
        raise ValueError("y and yhat must not contain NaN")
    return y, yhat


def wmae(y, yhat, is_holiday, holiday_weight: float = 5.0) -> float:
    """sum(w * |y - yhat|) / sum(w), w = holiday_weight on holiday periods, else 1."""
    y, yhat = _arrays(y, yhat)
    w = np.where(np.asarray(is_holiday, dtype=bool), holiday_weight, 1.0)
    return float(np.sum(w * np.abs(y - yhat)) / np.sum(w))


def mae(y, yhat) -> float:
    """Mean absolute error."""
    y, yhat = _arrays(y, yhat)
    return float(np.mean(np.abs(y - yhat)))


def rmse(y, yhat) -> float:
    """Root mean squared error."""
    y, yhat = _arrays(y, yhat)
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def bias(y, yhat) -> float:
    """Mean of (yhat - y): positive means over-forecasting."""
    y, yhat = _arrays(y, yhat)
    return float(np.mean(yhat - y))


def rmspe(y, yhat) -> float:
    """sqrt(mean(((y - yhat) / y) ** 2)) over rows with y > 0 (rows with y <= 0 are left
    out: a relative error has no meaning there); NaN when no row has y > 0."""
    y, yhat = _arrays(y, yhat)
    pos = y > 0
    if not pos.any():
        return float("nan")
    return float(np.sqrt(np.mean(((y[pos] - yhat[pos]) / y[pos]) ** 2)))


def score(frame: pd.DataFrame, pred: str, holiday_weight: float = 5.0) -> dict[str, float]:
    """Columns in: ``y``, ``is_holiday`` and ``pred``. Out: wmae, mae, rmse, bias, rmspe, n."""
    y, yhat, hol = frame["y"], frame[pred], frame["is_holiday"]
    return {
        "wmae": wmae(y, yhat, hol, holiday_weight),
        "mae": mae(y, yhat),
        "rmse": rmse(y, yhat),
        "bias": bias(y, yhat),
        "rmspe": rmspe(y, yhat),
        "n": float(len(frame)),
    }


def score_by(
    frame: pd.DataFrame, by: str | list[str], preds: list[str], holiday_weight: float = 5.0
) -> pd.DataFrame:
    """One row per group of ``by`` and prediction column: columns by..., model, wmae, mae,
    rmse, bias, rmspe, n. Vectorised (no Python loop per group), so per-series scoring is
    cheap. ``rmspe`` is NaN in a group without any y > 0."""
    by = [by] if isinstance(by, str) else list(by)
    w = np.where(frame["is_holiday"].to_numpy(dtype=bool), holiday_weight, 1.0)
    y = frame["y"].to_numpy(dtype=float)
    pos = y > 0
    safe_y = np.where(pos, y, 1.0)
    parts = []
    for p in preds:
        err = frame[p].to_numpy(dtype=float) - y
        tmp = frame[by].copy()
        tmp["_w"], tmp["_wa"] = w, w * np.abs(err)
        tmp["_a"], tmp["_s"], tmp["_e"] = np.abs(err), err**2, err
        tmp["_p"], tmp["_np"] = np.where(pos, (err / safe_y) ** 2, 0.0), pos.astype(float)
        g = tmp.groupby(by, sort=True)
        agg = g[["_w", "_wa", "_a", "_s", "_e", "_p", "_np"]].sum()
        n = g.size()
        out = pd.DataFrame(
            {
                "model": p,
                "wmae": agg["_wa"] / agg["_w"],
                "mae": agg["_a"] / n,
                "rmse": np.sqrt(agg["_s"] / n),
                "bias": agg["_e"] / n,
                "rmspe": np.sqrt(agg["_p"] / agg["_np"].where(agg["_np"] > 0)),
                "n": n.astype(float),
            }
        )
        parts.append(out.reset_index())
    return pd.concat(parts, ignore_index=True)
