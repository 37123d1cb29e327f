"""Speed measurements: the weekly batch cycle (through ``bench_batch_cycle``) and the drift
check on a million rows. Each runs in a process of its own (``_worker.py``)."""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd


def task_batch_cycle(
    walmart: str, pg_url: str, out: str, repeat: int, work_root: str
) -> dict[str, Any]:
    """``bench_batch_cycle`` as it is: the Prefect flow against the same steps as a plain
    script (medians of ``repeat`` alternating runs), ``write_forecasts`` against a raw COPY.
    ``work_root`` is emptied first, so its champion is trained by the code measured here.
    Its full report goes to ``out``; the figures run_all needs are returned."""
    import shutil

    import bench_batch_cycle

    shutil.rmtree(work_root, ignore_errors=True)
    argv = ["--walmart", walmart, "--pg-url", pg_url, "--out", out, "--repeat", str(repeat)]
    report = bench_batch_cycle.main([*argv, "--work-root", work_root])
    batch, write = report["batch"], report["write"]
    return {
        "flow_s": batch["flow"]["median_s"],
        "plain_s": batch["plain"]["median_s"],
        "ratio": batch["flow_over_plain_ratio"],
        "flow_overhead_s": batch["flow_overhead_s"],
        "rows": batch["rows"],
        "series": batch["series"],
        "repeat": batch["repeat"],
        "flow_task_s": batch["flow"]["median_task_run_s"],
        "plain_step_s": batch["plain"]["median_step_s"],
        "write_rows_per_s": write["write_forecasts_fresh_table"]["rows_per_s"],
        "write_s": write["write_forecasts_fresh_table"]["median_s"],
        "copy_rows_per_s": write["raw_copy_plain_table"]["rows_per_s"],
        "copy_s": write["raw_copy_plain_table"]["median_s"],
        "write_over_copy_ratio": write["write_over_copy_ratio"],
        "champion": {
            k: report["training"].get(k) for k in ("reused", "seconds", "version", "settings")
        },
        "postgres": report["machine"].get("postgres"),
        "report": out,
    }


def drift_frames(rows: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """A synthetic panel cut in two by date: ``rows`` reference rows (earlier weeks) and
    ``rows`` current rows (later weeks), with the 9 Walmart-like covariates."""
    from salesflow.config.settings import SyntheticSection
    from salesflow.data.synthetic import generate_sales

    n_depts, periods = 100, 200
    # ~15 % of synthetic series start late: ask for a fifth more than 2 x rows.
    n_stores = max(1, math.ceil(2.4 * rows / (n_depts * periods)))
    sales = generate_sales(SyntheticSection(n_stores=n_stores, n_depts=n_depts, periods=periods))
    hist = sales.history.sort_values("ds", kind="stable")
    if len(hist) < 2 * rows:
        raise ValueError(f"synthetic panel has {len(hist)} rows, fewer than 2 x {rows}")
    return hist.iloc[:rows], hist.iloc[-rows:], list(sales.covariates)


def _evidently_preset(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> bool:
    """Evidently 0.7 ``Report([DataDriftPreset()])`` directly (when salesflow.drift is absent)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snap = Report([DataDriftPreset()]).run(
        current_data=current[columns], reference_data=reference[columns]
    )
    counts = [m for m in snap.dict()["metrics"] if "DriftedColumnsCount" in m["metric_name"]]
    return bool(counts and counts[0]["value"]["share"] >= 0.5)


def task_drift(rows: int, max_rows: int | None) -> dict[str, Any]:
    """``salesflow.drift.detect_drift`` on ``rows`` x 9 covariates against ``rows`` of
    reference; ``max_rows`` None keeps the shipped setting (each side sampled to it). Falls
    back to Evidently's ``DataDriftPreset`` on all rows when salesflow.drift is absent."""
    from salesflow.config.settings import DriftSection

    t0 = time.perf_counter()
    reference, current, columns = drift_frames(rows)
    data_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    import evidently  # noqa: F401  (~3 s, timed apart from the check)

    import_s = time.perf_counter() - t1
    cfg = DriftSection() if max_rows is None else DriftSection(max_rows=max_rows)
    t2 = time.perf_counter()
    try:
        from salesflow.monitor.drift import detect_drift
    except ImportError:
        detected, impl, tested = _evidently_preset(reference, current, columns), "preset", rows
    else:
        result, _snapshot = detect_drift(reference, current, columns, cfg)
        detected, impl = result.detected, "salesflow.drift.detect_drift (Evidently ValueDrift)"
        tested = min(rows, cfg.max_rows)
    drift_s = time.perf_counter() - t2
    if impl == "preset":
        impl = "Evidently 0.7 Report([DataDriftPreset()]) directly: salesflow.drift absent"
    return {
        "drift_s": drift_s,
        "evidently_import_s": import_s,
        "make_data_s": data_s,
        "rows_reference": len(reference),
        "rows_current": len(current),
        "columns": len(columns),
        "rows_tested_per_side": tested,
        "max_rows": cfg.max_rows,
        "method": cfg.num_method,
        "detected": detected,
        "implementation": impl,
    }


TASKS = {"batch_cycle": task_batch_cycle, "drift": task_drift}
