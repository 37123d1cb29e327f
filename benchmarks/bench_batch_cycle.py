"""The weekly batch cycle on the Walmart data: the Prefect flow against the same work without it.

Usage::

    python benchmarks/bench_batch_cycle.py --walmart /work/shared/data/walmart_recruiting \\
        [--pg-url URL] [--out benchmarks/out/batch_cycle.json] [--repeat 3]

1. Trains a champion on the Walmart data with fast model settings (:data:`TRAIN_OVERRIDES`)
   through the training flow, in a work folder of its own (MLflow registry and artifacts);
   a later run with the same data and settings reuses it (``--retrain`` forces training).
2. Times, alternately and ``--repeat`` times each, (i) ``batch_forecast_flow`` writing to
   PostgreSQL and (ii) a plain script calling the same core functions without Prefect
   (load_sales -> validate_sales / drop_short_series -> load_forecaster -> score_series ->
   warehouse_rows -> write_forecasts). Every run writes a fresh table (dropped afterwards),
   so each is a first write of the same 3,331 series x 39 weeks.
3. Times ``write_forecasts`` of those rows against a raw psycopg binary ``COPY`` of the same
   rows into a plain table (no key, no index): the floor of what a write can cost.

Without ``PREFECT_API_URL`` the flows run against Prefect's temporary local server, started
by a warm-up flow before any timing. The JSON holds every run, the medians, the flow's
per-task times from the Prefect API, and a description of the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import describe_machine

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# Fast but sensible: half the default trees at twice the learning rate, every 4th week as a
# training origin, one 39-week backtest origin (the competition's), the default features.
TRAIN_OVERRIDES: dict[str, Any] = {
    "model": {
        "n_estimators": 200,
        "learning_rate": 0.1,
        "max_depth": 8,
        "origin_stride": 4,
        "horizon": 39,
        "n_jobs": 2,
    },
    "backtest": {"n_origins": 1},
}
PACKAGES = [
    "prefect",
    "mlflow",
    "xgboost",
    "great_expectations",
    "pandas",
    "numpy",
    "sqlalchemy",
    "psycopg",
    "psycopg-binary",
    "fastapi",
    "pydantic",
]


# --- settings and the champion -----------------------------------------------------------


def work_dir_for(walmart: Path, root: Path) -> Path:
    """A folder per (data, training settings): its MLflow registry is reused across runs."""
    key = json.dumps({"walmart": str(walmart.resolve()), "train": TRAIN_OVERRIDES}, sort_keys=True)
    return root / hashlib.sha256(key.encode()).hexdigest()[:12]


def base_overrides(work: Path) -> dict[str, Any]:
    return {"paths": {"local_dir": str(work)}}


def ensure_champion(walmart: Path, work: Path, retrain: bool) -> dict[str, Any]:
    """Train and register a champion unless the work folder already has one."""
    from salesflow.config.settings import load_settings
    from salesflow.modelling.registry import get_alias_version

    settings = load_settings("dev", **base_overrides(work), **TRAIN_OVERRIDES)
    mv = get_alias_version(settings.tracking_uri, settings.model.name, "champion")
    info: dict[str, Any] = {"work_dir": str(work), "settings": TRAIN_OVERRIDES}
    record = work / "training.json"  # what the run that trained the champion measured
    if mv is not None and not retrain:
        if record.exists():
            info.update(json.loads(record.read_text()))
        info.update(reused=True, version=str(mv.version), mlflow_run_id=mv.run_id)
        return info
    from flows.training import training_flow

    start = time.perf_counter()
    result = training_flow(
        env="dev",
        source="walmart",
        path=str(walmart),
        overrides={**base_overrides(work), **TRAIN_OVERRIDES},
    )
    info.update(
        reused=False,
        seconds=round(time.perf_counter() - start, 1),
        version=result["version"],
        mlflow_run_id=result["run_id"],
        alias=result["alias"],
        backtest_origins=result["origins"],
        backtest_wmae={k: round(v["wmae"], 1) for k, v in result["metrics"].items()},
    )
    if result["alias"] is None:  # an older version holds it: time the champion, as a user would
        mv = get_alias_version(settings.tracking_uri, settings.model.name, "champion")
        info["champion_version"] = str(mv.version)
    record.write_text(json.dumps(info, indent=2, default=str) + "\n")
    return info


# --- the two ways of running the batch cycle ---------------------------------------------


def run_flow(walmart: Path, work: Path, pg_url: str, table: str) -> dict[str, Any]:
    """``batch_forecast_flow`` as a deployment would call it; wall time and Prefect's view."""
    from flows.batch_forecast import batch_forecast_flow

    overrides = {
        **base_overrides(work),
        "warehouse": {"url": pg_url, "url_env": None, "table": table},
    }
    start = time.perf_counter()
    state = batch_forecast_flow(
        env="dev", source="walmart", path=str(walmart), overrides=overrides, return_state=True
    )
    seconds = time.perf_counter() - start
    if not state.is_completed():
        raise RuntimeError(f"batch_forecast_flow ended in state {state.name}: {state.message}")
    result = state.result()
    return {
        "seconds": round(seconds, 3),
        "rows_written": result["rows_written"],
        "series": result["series"],
        "origin": result["origin"],
        "model_version": result["model_version"],
        **prefect_view(state.state_details.flow_run_id),
    }


def prefect_view(flow_run_id: Any) -> dict[str, Any]:
    """The flow run's time in Running and each task run's run time, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {
        "flow_run_running_s": round(fr.total_run_time.total_seconds(), 3),
        "task_run_s": {  # run names end in a random suffix: "ingest-sales-3fa"
            t.name.rsplit("-", 1)[0]: round(t.total_run_time.total_seconds(), 3)
            for t in sorted(tasks, key=lambda t: t.start_time or t.expected_start_time)
        },
    }


def run_plain(walmart: Path, work: Path, pg_url: str, table: str) -> dict[str, Any]:
    """The same steps as the flow, as plain function calls; wall time and per-step times."""
    from salesflow.config.settings import load_settings, settings_overrides
    from salesflow.data.sources import load_sales
    from salesflow.data.validation import DataValidationError, drop_short_series, validate_sales
    from salesflow.modelling.registry import load_forecaster
    from salesflow.modelling.scoring import score_series, warehouse_rows
    from salesflow.storage.warehouse import write_forecasts

    steps: dict[str, float] = {}

    @contextmanager
    def step(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        steps[name] = round(time.perf_counter() - t0, 3)

    start = time.perf_counter()
    with step("settings"):
        settings = load_settings(
            "dev", **settings_overrides("walmart", str(walmart), None, base_overrides(work))
        )
    with step("load-champion"):
        model, mv = load_forecaster(
            settings.tracking_uri, settings.model.name, settings.mlflow.champion_alias
        )
    with step("ingest-sales"):
        data = load_sales(settings.data)
    with step("validate-sales"):
        report = validate_sales(data, settings.validation, settings.data.as_of)
        if not report.passed:
            raise DataValidationError(report)
        data = drop_short_series(data, report)
    with step("forecast-series"):
        pred, notes = score_series(model, data, None)
        rows = warehouse_rows(pred, model.keys_, mv.name, str(mv.version), mv.run_id, None)
    with step("write-forecasts"):
        res = write_forecasts(pg_url, rows, table=table)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "rows_written": res.rows_written,
        "series": notes.n_series_forecast,
        "origin": str(notes.origin.date()),
        "model_version": str(mv.version),
        "step_s": steps,
        "_rows": rows,
    }


# --- the write against a raw COPY --------------------------------------------------------


def raw_copy_seconds(pg_url: str, rows: Any, table: str) -> float:
    """Seconds to COPY (binary) the rows, converted from the frame, into a plain table."""
    import sqlalchemy as sa
    from _pgcopy import raw_copy_seconds as copy_seconds

    engine = sa.create_engine(pg_url)
    try:
        return copy_seconds(engine, rows, table)
    finally:
        engine.dispose()


def write_seconds(pg_url: str, rows: Any, table: str) -> float:
    from salesflow.storage.warehouse import write_forecasts

    start = time.perf_counter()
    write_forecasts(pg_url, rows, table=table)
    return time.perf_counter() - start


# --- bookkeeping -------------------------------------------------------------------------


class Tables:
    """Fresh table names, all dropped at the end."""

    def __init__(self, pg_url: str) -> None:
        self.pg_url, self.names = pg_url, []
        self.prefix = f"bench_cycle_{uuid.uuid4().hex[:6]}"

    def new(self) -> str:
        self.names.append(f"{self.prefix}_{len(self.names)}")
        return self.names[-1]

    def drop_all(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self.pg_url)
        try:
            with engine.begin() as conn:
                for name in self.names:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        finally:
            engine.dispose()


def median_summary(runs: list[dict[str, Any]] | list[float], rows: int) -> dict[str, Any]:
    seconds = [r["seconds"] if isinstance(r, dict) else r for r in runs]
    med = statistics.median(seconds)
    return {
        "seconds": [round(s, 3) for s in seconds],
        "median_s": round(med, 3),
        "rows_per_s": round(rows / med),
    }


def median_of(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    names = list(runs[0][key])
    return {n: round(statistics.median(r[key][n] for r in runs if n in r[key]), 3) for n in names}


def machine(pg_url: str) -> dict[str, Any]:
    return {
        **describe_machine(PACKAGES),
        "postgres": _pg_version(pg_url),
        "prefect_api": os.environ.get("PREFECT_API_URL") or "temporary local server",
    }


def _pg_version(pg_url: str) -> str | None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SHOW server_version").scalar()
    finally:
        engine.dispose()


def warm_up_prefect() -> float:
    """Start the API (temporary server) and import the flow machinery before any timing."""
    from prefect import flow

    @flow(name="bench-warm-up")
    def _warm_up() -> int:
        return 1

    start = time.perf_counter()
    _warm_up()
    return time.perf_counter() - start


def timed(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    out = fn()
    print(f"[bench] {label}: {out['seconds']:.2f} s, {out['rows_written']:,} rows", flush=True)
    return out


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walmart", type=Path, required=True, help="Walmart Recruiting folder")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/batch_cycle.json"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--work-root",
        type=Path,
        default=Path(tempfile.gettempdir()) / "salesflow-bench-batch-cycle",
        help="where the benchmark keeps its MLflow registry between runs",
    )
    parser.add_argument("--retrain", action="store_true", help="train even if a champion exists")
    args = parser.parse_args(argv)

    from salesflow.storage.warehouse import check_connection, redact_url

    check_connection(args.pg_url)
    work = work_dir_for(args.walmart, args.work_root)
    report: dict[str, Any] = {"machine": machine(args.pg_url), "pg_url": redact_url(args.pg_url)}
    report["prefect_warm_up_s"] = round(warm_up_prefect(), 2)
    report["training"] = ensure_champion(args.walmart, work, args.retrain)
    print(f"[bench] champion: {json.dumps(report['training'], default=str)}", flush=True)

    tables = Tables(args.pg_url)

    def cycle(fn: Callable[[Path, Path, str, str], dict[str, Any]]) -> dict[str, Any]:
        return fn(args.walmart, work, args.pg_url, tables.new())

    flow_runs: list[dict[str, Any]] = []
    plain_runs: list[dict[str, Any]] = []
    try:
        # Untimed: imports (GX, MLflow pyfunc, XGBoost) and caches, for both paths alike.
        warm = timed("warm-up (plain, untimed)", lambda: cycle(run_plain))
        report["warm_up_plain_s"] = warm["seconds"]
        for i in range(args.repeat):  # alternate, so drift in the machine's load hits both
            flow_runs.append(timed(f"flow #{i + 1}", lambda: cycle(run_flow)))
            plain_runs.append(timed(f"plain #{i + 1}", lambda: cycle(run_plain)))
        rows = plain_runs[-1].pop("_rows")
        for r in plain_runs:
            r.pop("_rows", None)
        writes = [write_seconds(args.pg_url, rows, tables.new()) for _ in range(args.repeat)]
        copies = [raw_copy_seconds(args.pg_url, rows, tables.new()) for _ in range(args.repeat)]
    finally:
        tables.drop_all()

    n = len(rows)
    flow_med = statistics.median(r["seconds"] for r in flow_runs)
    plain_med = statistics.median(r["seconds"] for r in plain_runs)
    report["batch"] = {
        "rows": n,
        "series": plain_runs[-1]["series"],
        "horizon": n // max(plain_runs[-1]["series"], 1),
        "origin": plain_runs[-1]["origin"],
        "repeat": args.repeat,
        "flow": {
            **median_summary(flow_runs, n),
            "median_flow_run_running_s": round(
                statistics.median(r["flow_run_running_s"] for r in flow_runs), 3
            ),
            "median_task_run_s": median_of(flow_runs, "task_run_s"),
            "runs": flow_runs,
        },
        "plain": {
            **median_summary(plain_runs, n),
            "median_step_s": median_of(plain_runs, "step_s"),
            "runs": plain_runs,
        },
        "flow_over_plain_ratio": round(flow_med / plain_med, 3),
        "flow_overhead_s": round(flow_med - plain_med, 3),
    }
    report["write"] = {
        "rows": n,
        "write_forecasts_fresh_table": median_summary(writes, n),
        "raw_copy_plain_table": median_summary(copies, n),
        "write_over_copy_ratio": round(statistics.median(writes) / statistics.median(copies), 3),
        "note": "both include converting the frame to driver values; write_forecasts also "
        "creates the table with its key and index, stages via COPY and upserts",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({k: report[k] for k in ("batch", "write")}, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
