"""Accuracy of salesflow against the baselines and the peers, on one protocol.

Data: the Walmart folder after the validation gate (short series dropped), the same
``SalesData`` for every method. Split: fit on the weeks before an origin, forecast the 39
weeks from it. Rows scored: those of salesflow's backtest frame (every series with
history before the origin, every target week with an actual); peers' forecasts are joined
onto them. Metric: ``salesflow.metrics.score_by`` (WMAE with holiday weight 5, MAE, RMSE,
bias) for every method.

Tasks (run by ``_worker.py``, each in a process of its own) save frames as Parquet;
``combine`` and ``score_*`` run in the orchestrating process.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from salesflow.data.schema import DATE, ID, SalesData

HOLIDAY_WEIGHT = 5.0
BASELINES = ["seasonal_naive", "naive"]
FRAME_COLUMNS = [ID, "origin", DATE, "horizon", "y", "is_holiday", *BASELINES]


def prepare_data(walmart: Path, out: Path) -> dict[str, Any]:
    """Load the Walmart folder, run the validation gate, drop its short series; pickle the
    result to ``out`` (every measurement reads that same data)."""
    from salesflow.config.settings import load_settings
    from salesflow.data.sources import load_walmart
    from salesflow.data.validation import DataValidationError, drop_short_series, validate_sales

    raw = load_walmart(walmart)
    report = validate_sales(raw, load_settings("dev").validation)
    if not report.passed:
        raise DataValidationError(report)
    data = drop_short_series(raw, report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(pickle.dumps(data))
    return {
        "rows_loaded": len(raw.history),
        "series_loaded": raw.n_series,
        "series_dropped_short": len(report.short_series),
        "rows": len(data.history),
        "series": data.n_series,
        "first_date": str(data.history[DATE].min().date()),
        "last_date": str(data.last_date.date()),
    }


def read_data(path: str | Path) -> SalesData:
    return pickle.loads(Path(path).read_bytes())


# --- tasks (one process each) ---------------------------------------------------------------


def task_salesflow_single(data: str, origin: str, frame: str) -> dict[str, Any]:
    """salesflow's champion pipeline from one origin, exactly as ``salesflow train`` builds
    it (dev settings); the backtest frame (with both baselines) goes to ``frame``."""
    from features.build import make_grid
    from salesflow.config.settings import load_settings
    from salesflow.modelling.backtest import baseline_forecasts, run_backtest
    from salesflow.modelling.training import make_forecaster

    sales = read_data(data)
    fits: list[float] = []
    start = time.perf_counter()
    bt = run_backtest(
        sales,
        lambda: make_forecaster(load_settings("dev")),
        1,
        13,
        HOLIDAY_WEIGHT,
        origins=[pd.Timestamp(origin)],
        on_origin=lambda _o, model: fits.append(model.fit_seconds_),
    )
    total = time.perf_counter() - start
    t0 = time.perf_counter()
    grid = make_grid(sales.history, None, sales.covariates, sales.freq)
    baseline_forecasts(grid, grid.index_of(origin), 39, 52)
    base_s = time.perf_counter() - t0
    bt.frame.to_parquet(frame)
    return {
        "fit_s": fits[0],
        "predict_s": total - fits[0],
        "baselines_s": base_s,
        "rows": len(bt.frame),
        "series": int(bt.frame[ID].nunique()),
        "note": "predict_s = run_backtest time - fit time (prediction, baselines and joins)",
    }


def task_train(walmart: str, frame: str) -> dict[str, Any]:
    """What ``salesflow train`` computes, without the Prefect and MLflow calls: load,
    validate, build features, fit on all the data beside the backtest (3 origins),
    intervals. The backtest frame goes to ``frame`` (salesflow's rolling-origin rows)."""
    from salesflow.config.settings import load_settings
    from salesflow.data.sources import load_walmart
    from salesflow.data.validation import drop_short_series, validate_sales
    from salesflow.modelling.training import fit_and_evaluate, make_forecaster

    steps: dict[str, float] = {}
    start = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        steps[name] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()

    settings = load_settings("dev")
    raw = load_walmart(walmart)
    lap("load")
    data = drop_short_series(raw, validate_sales(raw, settings.validation))
    lap("validate")
    model = make_forecaster(settings)
    rows = model.training_rows(data)
    lap("features")
    # As the flow: the final fit beside the backtest (model.concurrent_fits), so the two
    # are timed together.
    model, bt = fit_and_evaluate(data, settings, model, rows)
    lap("fit_and_backtest")
    bt.frame.to_parquet(frame)
    return {
        "train_s": round(time.perf_counter() - start, 2),
        "step_s": steps,
        "train_rows": model.n_train_rows_,
        "candidate_rows": model.n_candidate_rows_,
        "final_fit_s": round(model.fit_seconds_, 2),
        "series": data.n_series,
        "backtest_origins": bt.origins,
        "settings": {
            "model": settings.model.model_dump(),
            "backtest": settings.backtest.model_dump(),
        },
    }


def task_peer(data: str, peer: str, origins: list[str], out: str) -> dict[str, Any]:
    """One peer from each origin; forecasts (unique_id, ds, origin, <peer>) to ``out``."""
    import _peers

    sales = read_data(data)
    frames, timing = [], {}
    for origin in origins:
        pred, tm = _peers.PEERS[peer](sales, pd.Timestamp(origin))
        frames.append(pred.assign(origin=pd.Timestamp(origin)))
        timing[origin] = tm
    pd.concat(frames, ignore_index=True).to_parquet(out)
    return {"by_origin": timing}


# --- combining and scoring ------------------------------------------------------------------


def combine(
    base: pd.DataFrame, peers: dict[str, pd.DataFrame], data: SalesData
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """salesflow's backtest rows with every peer's forecast joined on.

    ``base``: salesflow's backtest frame (``forecast`` renamed ``salesflow``). A peer's row
    falls back to salesflow's seasonal naive when its series is not eligible (fewer than 52
    weeks before the origin; the same rows for every peer) or when the peer gave no finite
    forecast for it. Returns the frame and, per peer, the rows of each kind of fallback.
    """
    import _peers

    frame = base.reset_index(drop=True)
    short = pd.Series(False, index=frame.index)
    for origin in frame["origin"].unique():
        at = frame["origin"] == origin
        ok = set(_peers.eligible_ids(data, pd.Timestamp(origin)))
        short |= at & ~frame[ID].isin(ok)
    fallbacks: dict[str, dict[str, int]] = {}
    for name, pred in peers.items():
        cols = [ID, "origin", DATE, name]
        frame = frame.merge(pred[cols], on=[ID, "origin", DATE], how="left")
        missing = ~np.isfinite(frame[name].to_numpy(dtype=float)) & ~short.to_numpy()
        use_base = short.to_numpy() | missing
        frame[name] = np.where(use_base, frame["seasonal_naive"], frame[name])
        fallbacks[name] = {
            "short_series_rows": int(short.sum()),
            "no_forecast_rows": int(missing.sum()),
        }
    frame["peer_short_series"] = short.to_numpy()
    return frame, fallbacks


def score_methods(frame: pd.DataFrame, methods: list[str], by: str | None = None) -> pd.DataFrame:
    """Columns out: [by,] model, wmae, mae, rmse, bias, n, ratio_to_seasonal_naive."""
    from salesflow.modelling.metrics import score_by

    key = by or "_all"
    scored = score_by(frame.assign(_all="all"), key, methods, HOLIDAY_WEIGHT)
    base = scored[scored["model"] == "seasonal_naive"].set_index(key)["wmae"]
    scored["ratio_to_seasonal_naive"] = scored["wmae"] / scored[key].map(base)
    return scored.drop(columns="_all") if by is None else scored


def seasonal_naive_check(frame: pd.DataFrame) -> dict[str, Any]:
    """salesflow's seasonal naive against statsforecast's SeasonalNaive(52) on the rows the
    latter forecast itself (eligible series): WMAE of each and how many rows differ."""
    from salesflow.modelling.metrics import wmae

    rows = frame[~frame["peer_short_series"]]
    ours, theirs = rows["seasonal_naive"], rows["sf_seasonal_naive"]
    diff = (ours - theirs).abs() > 0.005
    hol = rows["is_holiday"]
    return {
        "rows": len(rows),
        "wmae_salesflow_seasonal_naive": wmae(rows["y"], ours, hol, HOLIDAY_WEIGHT),
        "wmae_statsforecast_seasonal_naive": wmae(rows["y"], theirs, hol, HOLIDAY_WEIGHT),
        "rows_differing": int(diff.sum()),
        "why": "where last year's week is missing, salesflow's seasonal naive uses the last "
        "observed value, statsforecast (on the zero-filled grid) forecasts 0",
    }


TASKS = {
    "salesflow_single": task_salesflow_single,
    "train": task_train,
    "peer": task_peer,
}
