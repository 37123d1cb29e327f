"""How salesflow scales with the number of series, on the seeded synthetic panel.

Per size, two measurements, each in a process of its own:

* ``train``: features + fit of the forecaster with the shipped (dev) settings on the whole
  panel — what ``salesflow train`` spends before its backtest;
* ``batch``: the weekly batch cycle as plain function calls (validate -> drop short series
  -> score every series -> warehouse rows -> ``write_forecasts``), with a model trained
  beforehand (untimed) on the panel's first ``model_series`` series, so the batch time
  does not depend on how long training took. Generating the panel replaces reading files
  and is timed apart.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from salesflow.data.schema import ID, SalesData


def make_panel(n_stores: int, n_depts: int, periods: int) -> SalesData:
    from salesflow.config.settings import SyntheticSection
    from salesflow.data.synthetic import generate_sales

    return generate_sales(SyntheticSection(n_stores=n_stores, n_depts=n_depts, periods=periods))


def subset(data: SalesData, n_series: int) -> SalesData:
    ids = data.history[ID].drop_duplicates().head(n_series)
    keep = data.history[ID].isin(ids)
    return replace(
        data,
        history=data.history[keep].reset_index(drop=True),
        future=data.future[data.future[ID].isin(ids)].reset_index(drop=True),
    )


def training_rows_per_series(n_depts: int, periods: int, sample_stores: int = 10) -> float:
    """Training rows per series of a small panel with the same history length (the rows
    of a larger panel grow with its series)."""
    from salesflow.config.settings import load_settings
    from salesflow.modelling.training import make_forecaster

    data = make_panel(sample_stores, n_depts, periods)
    rows = make_forecaster(load_settings("dev")).training_rows(data)
    return len(rows) / data.n_series


def task_scale_train(n_stores: int, n_depts: int, periods: int) -> dict[str, Any]:
    from salesflow.config.settings import load_settings
    from salesflow.modelling.training import make_forecaster

    t0 = time.perf_counter()
    data = make_panel(n_stores, n_depts, periods)
    gen_s = time.perf_counter() - t0
    model = make_forecaster(load_settings("dev"))
    t1 = time.perf_counter()
    rows = model.training_rows(data)
    features_s = time.perf_counter() - t1
    model.fit(data, rows)
    train_s = time.perf_counter() - t1
    return {
        "train_s": train_s,
        "step_s": {"features": features_s, "fit": train_s - features_s},
        "generate_s": gen_s,
        "series": data.n_series,
        "history_rows": len(data.history),
        "periods": periods,
        "train_rows": len(rows),
    }


def _writer(pg_url: str | None):
    """A warehouse URL with a fresh table and a clean-up; PostgreSQL when given, else a
    temporary SQLite file."""
    if pg_url:
        from bench_batch_cycle import Tables

        tables = Tables(pg_url)
        return pg_url, tables.new(), tables.drop_all, "postgresql"
    tmp = tempfile.TemporaryDirectory()
    url = f"sqlite:///{Path(tmp.name) / 'warehouse.db'}"
    return url, "bench_scale_forecasts", tmp.cleanup, "sqlite"


def task_scale_batch(
    n_stores: int, n_depts: int, periods: int, pg_url: str | None, model_series: int
) -> dict[str, Any]:
    from salesflow.config.settings import load_settings
    from salesflow.data.validation import DataValidationError, drop_short_series, validate_sales
    from salesflow.modelling.scoring import score_series, warehouse_rows
    from salesflow.modelling.training import make_forecaster
    from salesflow.storage.warehouse import write_forecasts

    settings = load_settings("dev")
    t0 = time.perf_counter()
    data = make_panel(n_stores, n_depts, periods)
    gen_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = make_forecaster(settings).fit(subset(data, model_series))
    model_s = time.perf_counter() - t1
    url, table, cleanup, backend = _writer(pg_url)
    steps: dict[str, float] = {}
    try:
        start = t = time.perf_counter()
        report = validate_sales(data, settings.validation)
        if not report.passed:
            raise DataValidationError(report)
        data = drop_short_series(data, report)
        steps["validate"], t = time.perf_counter() - t, time.perf_counter()
        pred, notes = score_series(model, data)
        rows = warehouse_rows(pred, model.keys_, "bench-scale", "1", "bench", None)
        steps["forecast"], t = time.perf_counter() - t, time.perf_counter()
        written = write_forecasts(url, rows, table=table).rows_written
        steps["write"] = time.perf_counter() - t
        batch_s = time.perf_counter() - start
    finally:
        cleanup()
    return {
        "batch_s": batch_s,
        "step_s": steps,
        "generate_s": gen_s,
        "model_fit_s_untimed": model_s,
        "model_series": model_series,
        "series": data.n_series,
        "history_rows": len(data.history),
        "periods": periods,
        "rows_written": written,
        "series_forecast": notes.n_series_forecast,
        "warehouse": backend,
    }


TASKS = {"scale_train": task_scale_train, "scale_batch": task_scale_batch}
