"""Fitting the global forecaster on a Dask cluster with ``xgboost.dask``.

The driver learns the model's layout (categories, feature names) from the whole panel, so
every shard codes its rows the same way; the workers build each shard's training rows, its
partial group sums, and, once the sums are reduced, its float32 design matrix, target and
weight; ``xgboost.dask`` trains one booster over those partitions where they lie; the driver
loads the booster into a plain ``XGBRegressor``. The fitted model is an ordinary
:class:`GlobalForecaster`: ``predict``, the artifact and everything downstream are unchanged.

A shard is whole groups of the last key (e.g. every store of a department), so the per-group
denoising inside the grid (:func:`features.seasonal.denoised_history`) sees the same series as
on one machine; the ``grp_<k>_<f>`` means of the other keys (e.g. a store's departments) span
shards and come from sums reduced over all of them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from features.build import feature_names, training_frame
from salesflow.config.settings_compute import ComputeSection
from salesflow.data.schema import DATE, ID, SalesData
from salesflow.modelling.model import GROUP_SOURCES, GlobalForecaster, seasonal_base

log = logging.getLogger(__name__)
TARGET_COL, WEIGHT_COL = "__target", "__weight"


# ---- shards ----------------------------------------------------------------------------
def group_shards(data: SalesData, n_shards: int) -> list[list[str]]:
    """The series ids in at most ``n_shards`` lists of similar size, each holding whole
    groups of the last key (all series of a department); one list per series when the data
    has a single key. Deterministic: groups sorted, then placed largest first on the
    smallest shard."""
    st = data.static_frame()
    label = st[data.keys[-1]].astype(str) if len(data.keys) > 1 else st[ID]
    groups = st.groupby(label.to_numpy(), sort=True)[ID].apply(list)
    sizes = groups.map(len).sort_values(ascending=False, kind="stable")
    shards: list[list[str]] = [[] for _ in range(max(1, min(n_shards, len(groups))))]
    for g in sizes.index:
        min(shards, key=len).extend(groups[g])
    return [sorted(s) for s in shards if s]


def shard_count(n_series: int, n_workers: int, shard_series: int) -> int:
    """Partitions for a fit: at least one per worker, at most ``shard_series`` series each."""
    return max(n_workers, math.ceil(n_series / max(1, shard_series)))


def _shard_data(data: SalesData, ids: Sequence[str]) -> SalesData:
    keep = data.history[ID].isin(ids)
    return replace(data, history=data.history[keep].reset_index(drop=True), future=data.future[:0])


# ---- driver: layout ----------------------------------------------------------------------
def _learn_layout(model: GlobalForecaster, data: SalesData) -> None:
    """The learned attributes :meth:`GlobalForecaster.training_rows` sets before it builds
    the grid (categories from the whole panel, feature names), without building it."""
    learn = getattr(model, "learn_layout", None)
    if callable(learn):
        learn(data)
        return
    model.freq_, model.keys_, model.covariates_ = data.freq, list(data.keys), list(data.covariates)
    model.static_cols_ = list(data.static)
    categorical = list(getattr(data, "categorical", []))
    model.grid_covariates_ = [*model.covariates_, *categorical]
    model.spec = replace(
        model.spec, open_column=getattr(data, "open", None), categorical=tuple(categorical)
    )
    model._learn_categories(data)
    model.dynamic_features_ = feature_names(model.spec, model.grid_covariates_)
    model.group_features_ = [f"grp_{k}_{f}" for k in model._group_keys(data) for f in GROUP_SOURCES]
    model.feature_names_ = (
        model.dynamic_features_
        + model.group_features_
        + [f"static_{c}" for c in [*data.keys, *data.static]]
    )


# ---- workers: rows, group sums, design ---------------------------------------------------
def _on_global_dates(history: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp):
    """``history`` with a target-less row at ``start`` / ``end`` where none of its series has
    one, so the shard's grid spans the panel's dates (same origins as on one machine)."""
    pad = [d for d, have in ((start, history[DATE].min()), (end, history[DATE].max())) if have != d]
    if not pad:
        return history
    first = history[ID].iloc[0]
    extra = pd.DataFrame({ID: first, DATE: pd.DatetimeIndex(pad), "y": np.nan})
    return pd.concat([history, extra], ignore_index=True)


def shard_rows(
    model: GlobalForecaster, shard: SalesData, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """The training rows of one shard (columns as :meth:`GlobalForecaster.training_rows`),
    with the model's layout learned beforehand on the whole panel."""
    history = _on_global_dates(shard.history, start, end)
    grid = model._grid(history, None, shard)
    return training_frame(
        grid,
        len(grid.dates),
        model.horizon,
        model.spec,
        model.min_train_history,
        model.origin_stride,
    )


def _key_labels(rows: pd.DataFrame, shard: SalesData, key: str) -> np.ndarray:
    codes = shard.static_frame().set_index(ID)[key].astype(str)
    return rows[ID].map(codes).to_numpy(dtype=object)


def partial_group_sums(rows: pd.DataFrame, shard: SalesData, keys: list[str]) -> pd.DataFrame:
    """Per group key k, origin, ds and k's value: the sum and count of the non-missing values
    of each group source. Columns: key, value, origin, ds, sum_<f>, n_<f>."""
    parts = []
    for k in keys:
        frame = rows[["origin", DATE]].assign(key=k, value=_key_labels(rows, shard, k))
        for f in GROUP_SOURCES:
            v = rows[f].to_numpy(dtype=float)
            frame[f"sum_{f}"] = np.nan_to_num(v)
            frame[f"n_{f}"] = (~np.isnan(v)).astype(np.int64)
        parts.append(frame.groupby(["key", "value", "origin", DATE], sort=False).sum())
    return pd.concat(parts).reset_index() if parts else pd.DataFrame()


def reduce_group_means(*partials: pd.DataFrame) -> pd.DataFrame:
    """The ``grp_<k>_<f>`` means from every shard's partial sums: columns key, value,
    origin, ds, then one mean per group source (NaN where no series had a value)."""
    both = pd.concat([p for p in partials if len(p)], ignore_index=True)
    if both.empty:
        return both
    total = both.groupby(["key", "value", "origin", DATE], sort=False).sum()
    out = pd.DataFrame(index=total.index)
    for f in GROUP_SOURCES:
        n = total[f"n_{f}"].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f] = np.where(n > 0, total[f"sum_{f}"].to_numpy() / np.maximum(n, 1), np.nan)
    return out.reset_index()


def _group_columns(
    rows: pd.DataFrame, shard: SalesData, keys: list[str], means: pd.DataFrame
) -> pd.DataFrame:
    out = pd.DataFrame(index=range(len(rows)))
    for k in keys:
        m = means[means["key"] == k].drop(columns="key")
        left = pd.DataFrame(
            {"value": _key_labels(rows, shard, k), "origin": rows["origin"].to_numpy()}
        )
        left[DATE] = rows[DATE].to_numpy()
        got = left.merge(m, on=["value", "origin", DATE], how="left")
        for f in GROUP_SOURCES:
            out[f"grp_{k}_{f}"] = got[f].to_numpy()
    return out


def shard_design(
    model: GlobalForecaster,
    rows: pd.DataFrame,
    shard: SalesData,
    means: pd.DataFrame,
    n_keep: int,
    seed: int,
) -> pd.DataFrame:
    """One partition of the training matrix: the model's float32 features (group means
    from the whole panel), then the target and the weight (columns ``__target``,
    ``__weight``), on a seeded sample of ``n_keep`` of the shard's rows."""
    static = model._static_codes(shard)
    x = rows[[ID]].merge(static, on=ID, how="left").drop(columns=[ID])
    feats = rows[model.dynamic_features_].reset_index(drop=True)
    groups = _group_columns(rows, shard, model._group_keys(shard), means)
    x = pd.concat([feats, x.reset_index(drop=True), groups], axis=1)[model.feature_names_]
    x = x.astype(np.float32)
    hol = np.where(rows["is_holiday"].to_numpy() > 0, model.holiday_weight, 1.0)
    base = seasonal_base(rows, model.base_column_)
    x[TARGET_COL] = rows["y"].to_numpy() / rows["scale"].to_numpy() - base
    x[WEIGHT_COL] = rows["scale"].to_numpy() * hol
    if n_keep < len(x):
        keep = np.sort(np.random.default_rng(seed).choice(len(x), size=n_keep, replace=False))
        x = x.iloc[keep]
    return x.reset_index(drop=True)


def sample_sizes(lengths: Sequence[int], cap: int | None) -> list[int]:
    """Rows kept per partition: all when the total is within ``cap``, else shares of
    ``cap`` proportional to each partition's rows (largest remainders), summing to ``cap``."""
    total = int(sum(lengths))
    if cap is None or total <= cap:
        return [int(n) for n in lengths]
    exact = np.asarray(lengths, dtype=float) * cap / total
    out = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - out), kind="stable")[: cap - int(out.sum())]:
        out[i] += 1
    return [int(min(o, n)) for o, n in zip(out, lengths, strict=True)]


# ---- the fit -----------------------------------------------------------------------------
def _xgb_params(model: GlobalForecaster) -> dict[str, Any]:
    return {
        "objective": "reg:absoluteerror",
        "enable_categorical": True,
        "feature_types": model._feature_types(),
        **model.params,
    }


def _as_regressor(booster: xgb.Booster, params: dict[str, Any]) -> xgb.XGBRegressor:
    """A plain fitted ``XGBRegressor`` holding ``booster`` (as the artifact loads one)."""
    reg = xgb.XGBRegressor(**params)
    reg.load_model(bytearray(booster.save_raw("ubj")))
    for k, v in params.items():  # load_model resets a few wrapper attributes
        if k in vars(reg):
            setattr(reg, k, v)
    return reg


def fit_summary(model: GlobalForecaster) -> str | None:
    """Where the model's Dask fit ran (scheduler, workers, partitions, rows); None for a
    model fitted in one process."""
    d = getattr(model, "dask_fit_", None)
    if not d:
        return None
    return (
        f"scheduler {d['scheduler']}, {d['workers']} workers, {d['partitions']} partitions, "
        f"{d['train_rows']:,} of {d['candidate_rows']:,} rows"
    )


def fit_on_dask(
    model: GlobalForecaster,
    data: SalesData,
    client: Any,
    shards: int | Sequence[Sequence[str]],
) -> GlobalForecaster:
    """Fit ``model`` on ``data`` (all of it treated as known, as :meth:`GlobalForecaster.fit`)
    with ``xgboost.dask`` on ``client``'s cluster. ``shards``: the series id lists of the
    partitions (whole last-key groups: :func:`group_shards`), or how many to make.

    Same settings, features, target and weights as the local fit. The row cap
    (``model.max_train_rows``) keeps a seeded sample of each partition proportional to its
    rows, so the sample differs from the local one (which draws from all rows at once); the
    absolute-error leaves are refitted per worker and averaged by XGBoost, and the histogram
    bins come from a distributed sketch: the booster is close to, not equal to, the local one.
    Sets the same learned attributes as ``fit`` plus ``dask_fit_`` (:func:`fit_summary`).
    """
    from dask import dataframe as dd
    from xgboost import dask as dxgb

    t0 = time.perf_counter()
    _learn_layout(model, data)
    model.base_column_ = "prof_base" if model.spec.weekly_season else "seas_base"
    ids = group_shards(data, shards) if isinstance(shards, int) else [list(s) for s in shards]
    parts = [client.scatter(_shard_data(data, s)) for s in ids]
    start, end = data.history[DATE].min(), data.history[DATE].max()
    rows = [client.submit(shard_rows, model, p, start, end, pure=False) for p in parts]
    keys = model._group_keys(data)
    sums = [client.submit(partial_group_sums, r, p, keys) for r, p in zip(rows, parts, strict=True)]
    means = client.submit(reduce_group_means, *sums)
    lengths = client.gather([client.submit(len, r) for r in rows])
    keep = sample_sizes(lengths, getattr(model, "max_train_rows", None))
    seed = int(model.params.get("random_state", 0))
    designs = [
        client.submit(shard_design, model, r, p, means, k, seed + i, pure=False)
        for i, (r, p, k) in enumerate(zip(rows, parts, keep, strict=True))
    ]
    meta = pd.DataFrame(
        {c: pd.Series(dtype=np.float32) for c in model.feature_names_}
        | {TARGET_COL: pd.Series(dtype=float), WEIGHT_COL: pd.Series(dtype=float)}
    )
    frame = dd.from_delayed(designs, meta=meta, verify_meta=False)
    params = _xgb_params(model)
    est = dxgb.DaskXGBRegressor(**{**params, "n_jobs": None})  # threads: the workers' own
    est.client = client
    with client.as_current():  # xgboost.dask looks the client type up via get_client()
        est.fit(frame[model.feature_names_], frame[TARGET_COL], sample_weight=frame[WEIGHT_COL])
    del frame, designs, rows, sums, means, parts
    model.model_ = _as_regressor(est.get_booster(), params)
    model.trained_until_ = data.last_date
    model.n_train_rows_ = int(sum(keep))
    model.n_candidate_rows_ = int(sum(lengths))
    model.n_series_ = data.n_series
    model.train_series_ = sorted(data.history[ID].unique())
    model.fit_seconds_ = time.perf_counter() - t0
    model.residual_quantiles_ = None
    info = client.scheduler_info()
    model.dask_fit_ = {  # type: ignore[attr-defined]  # plain values: saved with the artifact
        "scheduler": str(info.get("address", "")),
        "workers": len(info.get("workers", {})),
        "partitions": len(ids),
        "candidate_rows": int(sum(lengths)),
        "train_rows": int(sum(keep)),
    }
    return model


# ---- the run's fitter ------------------------------------------------------------------------
@dataclass
class DaskFitter:
    """``fit(model, data)`` on the run's Dask cluster: one client for every fit of a run
    (final fit, backtest origins, retrain refit). Fits run one at a time: two
    ``xgboost.dask`` trainings at once can each hold a worker the other waits for."""

    client: Any
    shard_series: int

    def __call__(self, model: GlobalForecaster, data: SalesData) -> GlobalForecaster:
        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        return fit_on_dask(
            model, data, self.client, shard_count(data.n_series, workers, self.shard_series)
        )


@contextmanager
def compute_fitter(compute: ComputeSection) -> Iterator[DaskFitter | None]:
    """A :class:`DaskFitter` on the configured cluster for ``engine: dask`` (a local cluster
    is started and closed here), None for ``engine: local`` (fit in this process)."""
    if compute.engine != "dask":
        yield None
        return
    from salesflow.compute.cluster import dask_client

    with dask_client(compute) as client:
        yield DaskFitter(client, compute.shard_series)
