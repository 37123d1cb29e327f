"""The pieces of ``bench_scale.py``: panels, the model, the write targets, peak memory, and
the functions its Dask workers run.

Workers import this module by name (``benchmarks/`` is on the path of the spawned worker
processes), so everything a worker calls is a plain top-level function here. The scoring
itself is the library's: :func:`salesflow.modelling.scoring.plan_scoring`,
:func:`~salesflow.modelling.scoring.shard_features`,
:func:`~salesflow.modelling.scoring.reduce_shards`,
:func:`~salesflow.modelling.scoring.forecast_shard`, ``warehouse_rows``, and
:mod:`salesflow.storage.staging` (``stage_forecasts`` per shard, one ``commit_stage``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from salesflow.data.schema import ID, SalesData, make_unique_id

RUN_NAME = "bench-scale"  # model_name of the rows written


# --- memory ---------------------------------------------------------------------------------


def vmhwm_mb() -> float:
    """This process's RSS high-water mark (``VmHWM``), MB. Not ``ru_maxrss``: Linux carries
    the parent's mark into that across fork + exec (see ``_common.peak_rss_mb``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class PeakSampler:
    """Polls the RSS of this process and of every descendant (Dask nannies and workers,
    restarted ones too) every ``interval`` s; keeps each pid's peak and role (``role_of``;
    a process just forked still shows its parent's command line, so an ``other`` role is
    asked again a few times). ``load_every``: also the 1-minute load average that often."""

    def __init__(
        self,
        interval: float = 0.5,
        role_of: Callable[[Any], str] | None = None,
        load_every: float | None = None,
    ) -> None:
        import psutil

        self.me, self.interval = psutil.Process(), interval
        self.role_of = role_of or _role
        self.load_every = load_every
        self.peaks: dict[int, dict[str, Any]] = {}
        self.loads: list[tuple[str, float]] = []
        self._last_load = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            now = time.monotonic()
            if self.load_every is not None and now - self._last_load >= self.load_every:
                self._last_load = now
                load = round(os.getloadavg()[0], 2)
                self.loads.append((time.strftime("%H:%M:%S", time.gmtime()), load))
            self._stop.wait(self.interval)

    def sample(self) -> None:
        import psutil

        try:
            procs = [self.me, *self.me.children(recursive=True)]
        except psutil.Error:
            return
        for p in procs:
            try:
                rss = p.memory_info().rss / 2**20
                entry = self.peaks.get(p.pid)
                if entry is None or entry["role"].startswith("other") and entry["n"] < 20:
                    old = entry["peak_mb"] if entry else 0.0
                    n = entry["n"] + 1 if entry else 0
                    entry = self.peaks[p.pid] = {"role": self.role_of(p), "peak_mb": old, "n": n}
                entry["peak_mb"] = round(max(entry["peak_mb"], rss), 1)
            except psutil.Error:
                continue

    def mark(self) -> dict[int, float]:
        return {pid: e["peak_mb"] for pid, e in self.peaks.items()}

    def by_role(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for e in self.peaks.values():
            out.setdefault(e["role"], []).append(e["peak_mb"])
        return {k: sorted(v, reverse=True) for k, v in sorted(out.items())}


def _role(p: Any) -> str:
    if p.pid == os.getpid():
        return "driver"
    try:
        cmd = " ".join(p.cmdline())
    except Exception:  # noqa: BLE001 - a process gone between listing and asking
        return "other"
    if "resource_tracker" in cmd:
        return "other"
    if "spawn_main" in cmd:  # LocalCluster's nannies live in the driver; workers are spawned
        return "dask-worker"
    return "other"


def warm_up() -> None:
    """Import what scoring, validation and staging load on first use (Great Expectations,
    XGBoost, SQLAlchemy's dialect), so no variant's clock counts a cold import."""
    import great_expectations  # noqa: F401
    import psycopg  # noqa: F401
    import xgboost  # noqa: F401

    import salesflow.data.validation  # noqa: F401
    import salesflow.modelling.scoring  # noqa: F401
    import salesflow.storage.staging  # noqa: F401
    import salesflow.storage.warehouse  # noqa: F401


# --- panels ---------------------------------------------------------------------------------


def make_panel(n_stores: int, n_depts: int, periods: int, seed: int = 42) -> SalesData:
    from salesflow.config.settings import SyntheticSection
    from salesflow.data.synthetic import generate_sales

    cfg = SyntheticSection(n_stores=n_stores, n_depts=n_depts, periods=periods, seed=seed)
    return generate_sales(cfg)


def panel_part(
    index: int, n_stores: int, n_depts: int, periods: int, statics: pd.DataFrame, per: int
) -> SalesData:
    """Part ``index`` of a panel generated in parts (partitioned ingestion, on a worker):
    ``n_stores`` stores x ``n_depts`` departments numbered from ``index * per + 1`` (whole
    departments, so a part is a scoring shard), seeded ``42 + index``; the stores' static
    columns are those of the seed-42 panel, so a store has one type and size in every part
    (its covariates differ from part to part: a benchmark's shortcut)."""
    data = make_panel(n_stores, n_depts, periods, seed=42 + index)
    offset = index * per
    cols = [c for c in statics.columns if c != "store"]

    def fix(frame: pd.DataFrame) -> pd.DataFrame:
        if not len(frame):
            return frame
        frame = frame.assign(dept=frame["dept"] + offset)
        frame = frame.drop(columns=cols).merge(statics, on="store", how="left")
        frame[ID] = make_unique_id(frame, ["store", "dept"])
        return frame[list(data.history.columns if "y" in frame else data.future.columns)]

    return replace(data, history=fix(data.history), future=fix(data.future))


def store_statics(n_stores: int, periods: int) -> pd.DataFrame:
    static = make_panel(n_stores, 1, periods).static_frame()
    return static.drop(columns=[ID, "dept"]).drop_duplicates("store").reset_index(drop=True)


def first_series(data: SalesData, n_series: int) -> SalesData:
    ids = data.history[ID].drop_duplicates().head(n_series)
    keep = data.history[ID].isin(ids)
    future = data.future[data.future[ID].isin(ids)]
    return replace(
        data, history=data.history[keep].reset_index(drop=True), future=future.reset_index()
    )


def load_model(n_depts: int, periods: int, model_series: int, cache: Path) -> tuple[Any, float]:
    """The dev settings' forecaster fitted on the first ``model_series`` series of a
    ``model_series / n_depts`` x ``n_depts`` panel of ``periods`` weeks (cached in
    ``cache``: every variant scores with the same model). Returns it and the fit seconds
    (0 when read from the cache)."""
    from salesflow.config.settings import load_settings
    from salesflow.modelling.training import make_forecaster

    path = cache / f"model-{n_depts}d-{periods}w-{model_series}s.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes()), 0.0
    t0 = time.perf_counter()
    stores = max(1, model_series // n_depts)
    data = first_series(make_panel(stores, n_depts, periods), model_series)
    model = make_forecaster(load_settings("dev")).fit(data)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(model))
    return model, time.perf_counter() - t0


# --- the warehouse ----------------------------------------------------------------------------


class Target:
    """Fresh forecasts/runs table names on ``url`` (a stage table beside them), dropped by
    :meth:`drop`."""

    def __init__(self, url: str) -> None:
        self.url = url
        tag = uuid.uuid4().hex[:6]
        self.table, self.runs = f"bench_scale_{tag}", f"bench_scale_{tag}_runs"

    def drop(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url)
        try:
            with engine.begin() as conn:
                for name in (self.table, self.runs, f"{self.table}_stage"):
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        finally:
            engine.dispose()


def rows_of(model: Any, pred: pd.DataFrame) -> pd.DataFrame:
    from salesflow.modelling.scoring import warehouse_rows

    return warehouse_rows(pred, model.keys_, RUN_NAME, "1", "bench", None)


# --- what the workers run ----------------------------------------------------------------------


def validated(data: SalesData) -> tuple[SalesData, list[str]]:
    """The flow's gate: validate (raise on failure), drop short series; which dropped."""
    from salesflow.config.settings import load_settings
    from salesflow.data.validation import DataValidationError, drop_short_series, validate_sales

    report = validate_sales(data, load_settings("dev").validation)
    if not report.passed:
        raise DataValidationError(report)
    return drop_short_series(data, report), [str(i) for i in report.short_series]


def sums_task(model: Any, data: SalesData, origin: pd.Timestamp, holidays: pd.Series):
    """Pass 1 of a shard (the flow's ``shard-group-sums``): features, kept only as the
    shard's summary (partial group sums, notes); returns it and its costs."""
    from salesflow.modelling.scoring import shard_features

    t0, c0 = time.perf_counter(), time.process_time()
    summary = shard_features(model, data, origin, holidays).summary
    cost = {"features_s": time.perf_counter() - t0, "series": data.n_series}
    return summary, {**cost, "cpu_seconds": time.process_time() - c0}


def stage_task(
    model: Any, data: SalesData, origin, holidays, means: dict, *sink: Any
) -> dict[str, Any]:
    """Pass 2 (the flow's ``forecast-shard``): features again, forecasts with the panel's
    group means, warehouse rows, ``stage_forecasts`` (nothing reaches the forecasts table
    before the commit); the seconds of each step."""
    from salesflow.modelling.scoring import forecast_shard, shard_features
    from salesflow.storage.staging import stage_forecasts

    url, table, stage_id, name = sink
    t0, c0 = time.perf_counter(), time.process_time()
    part = shard_features(model, data, origin, holidays)
    t1 = time.perf_counter()
    pred = forecast_shard(model, part, means)
    del part
    t2 = time.perf_counter()
    rows = rows_of(model, pred)
    t3 = time.perf_counter()
    staged = stage_forecasts(url, rows, stage_id, name, table=table)
    cost = {"again_features_s": t1 - t0, "predict_s": t2 - t1, "rows_s": t3 - t2}
    cost["cpu2_seconds"] = time.process_time() - c0
    return {**cost, "stage_s": time.perf_counter() - t3, "rows": staged}


def generated(index: int, shape: dict[str, Any], statics: pd.DataFrame, drop=None):
    """A part generated here (partitioned ingestion) and validated; seconds of each. With
    ``drop`` (the short series pass 1 found), pass 2's stand-in for reading the part again:
    generated, those series removed, not validated a second time (the flow validates once)."""
    t0 = time.perf_counter()
    per = shape["depts_per_part"]
    depts = min(per, shape["n_depts"] - index * per)
    data = panel_part(index, shape["n_stores"], depts, shape["periods"], statics, per)
    t1 = time.perf_counter()
    if drop is None:
        data, short = validated(data)
    else:
        keep = ~data.history[ID].isin(set(drop))
        data, short = replace(data, history=data.history[keep].reset_index(drop=True)), drop
    cost = {"generate_s": t1 - t0, "validate_s": time.perf_counter() - t1}
    return data, cost, short


def generated_sums_task(model: Any, index: int, shape: dict, statics, origin, holidays):
    """Pass 1 of a part generated on the worker: generate -> validate -> summary; also the
    part's data fingerprint and the short series dropped."""
    from salesflow.modelling.registry import data_fingerprint

    c0 = time.process_time()
    data, cost, short = generated(index, shape, statics)
    summary, more = sums_task(model, data, origin, holidays)
    cost.update(more, history_rows=len(data.history), short=len(short))
    print_ = data_fingerprint(data)
    cost["cpu_seconds"] = time.process_time() - c0
    return summary, cost, print_, short


def generated_stage_task(
    model: Any, index: int, shape: dict, statics, origin, holidays, means, *sink: Any
) -> dict[str, Any]:
    """Pass 2 of a generated part: generated (read) again, then as :func:`stage_task`.
    ``sink``: url, table, stage_id, shard name, the short series of pass 1."""
    c0 = time.process_time()
    data, cost, _ = generated(index, shape, statics, drop=sink[-1])
    again = {f"again_{k}": v for k, v in cost.items() if k.endswith("_s")}
    out = {**again, **stage_task(model, data, origin, holidays, means, *sink[:-1])}
    return {**out, "cpu2_seconds": time.process_time() - c0}


def combined_fingerprint(prints: list[str]) -> str:
    return hashlib.sha256("".join(prints).encode()).hexdigest()[:16]
