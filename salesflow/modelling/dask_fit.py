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
from salesflow.compute.shards import series_shards, shard_data
from salesflow.config.settings_compute import ComputeSection
from salesflow.data.schema import DATE, HOLIDAY, ID, TARGET, SalesData
from salesflow.modelling.groups import GroupSums, combine_group_sums, group_means_from
from salesflow.modelling.model import GROUP_SOURCES, GlobalForecaster, seasonal_base

TARGET_COL, WEIGHT_COL = "__target", "__weight"


# ---- shards ----------------------------------------------------------------------------
def shard_size(n_series: int, n_workers: int, shard_series: int) -> int:
    """Series per training partition: at most ``shard_series``, and few enough series that
    every worker gets a partition."""
    return max(1, min(shard_series, math.ceil(n_series / max(1, n_workers))))


def panel_flags(data: SalesData) -> pd.Series:
    """``is_holiday`` per date as the whole panel's grid takes it (the maximum over its
    series, history and future rows), so a shard's grid flags the same dates (a grid
    takes only the flags of its own dates)."""
    frames = [f[[DATE, HOLIDAY]] for f in (data.history, data.future) if HOLIDAY in f]
    given = pd.concat(frames, ignore_index=True).dropna(subset=[HOLIDAY])
    return given.groupby(DATE)[HOLIDAY].max().astype(bool)


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
def _on_panel_dates(history: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp):
    """``history`` with a target-less row at ``start`` / ``end`` where none of its series has
    one, so the shard's grid spans the panel's dates (same origins as on one machine)."""
    pad = [d for d, have in ((start, history[DATE].min()), (end, history[DATE].max())) if have != d]
    if not pad:
        return history
    first = history[ID].iloc[0]
    extra = pd.DataFrame({ID: first, DATE: pd.DatetimeIndex(pad), TARGET: np.nan})
    return pd.concat([history, extra], ignore_index=True)


def shard_rows(
    model: GlobalForecaster,
    shard: SalesData,
    start: pd.Timestamp,
    end: pd.Timestamp,
    holidays: pd.Series,
) -> pd.DataFrame:
    """The training rows of one shard (columns as :meth:`GlobalForecaster.training_rows`),
    the model's layout learned beforehand on the whole panel: the same rows the panel's
    ``training_rows`` gives for these series (the grid spans the panel's dates ``start`` ..
    ``end`` and takes its holiday flags ``holidays``)."""
    history = _on_panel_dates(shard.history, start, end)
    grid = model._grid(history, None, shard, holidays=holidays)
    return training_frame(
        grid,
        len(grid.dates),
        model.horizon,
        model.spec,
        model.min_train_history,
        model.origin_stride,
    )


def reduce_group_means(*parts: GroupSums) -> dict[str, pd.DataFrame]:
    """The group means over every shard from their partial sums."""
    return group_means_from(combine_group_sums(parts))


def shard_design(
    model: GlobalForecaster,
    rows: pd.DataFrame,
    shard: SalesData,
    means: dict[str, pd.DataFrame],
    n_keep: int,
    seed: int,
) -> pd.DataFrame:
    """One partition of the training matrix: the model's float32 features (group means
    over the whole panel), then the target and the weight (columns ``__target``,
    ``__weight``, as :meth:`GlobalForecaster.fit` computes them), for a seeded sample of
    ``n_keep`` of the shard's rows. The sample is drawn first: every column is computed
    row by row once the group means are known, so only the kept rows are built."""
    if n_keep < len(rows):
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=n_keep, replace=False))
        rows = rows.iloc[keep].reset_index(drop=True)
    x = model._design(rows, shard, means)
    hol = np.where(rows["is_holiday"].to_numpy() > 0, model.holiday_weight, 1.0)
    base = seasonal_base(rows, model.base_column_)
    x[TARGET_COL] = rows[TARGET].to_numpy() / rows["scale"].to_numpy() - base
    x[WEIGHT_COL] = rows["scale"].to_numpy() * hol
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
    with ``xgboost.dask`` on ``client``'s cluster. ``shards``: the series ids of each
    partition (whole groups of the last key: :func:`salesflow.compute.shards.series_shards`),
    or how many partitions to aim for.

    Same settings, features, target and weights as the local fit; with one partition the
    booster is the local one. With several, the rows are in another order and XGBoost's
    per-worker leaf medians and quantile sketch are merged, so the model is close to, not
    equal to, the local one. The row cap (``model.max_train_rows``) keeps a seeded sample of
    each partition proportional to its rows: another sample than the local fit's (drawn from
    all rows at once). Sets the learned attributes ``fit`` sets, plus ``dask_fit_``
    (:func:`fit_summary`).
    """
    from distributed import wait

    t0 = time.perf_counter()
    _learn_layout(model, data)
    model.base_column_ = "prof_base" if model.spec.weekly_season else "seas_base"
    if isinstance(shards, int):
        shards = series_shards(data, model, math.ceil(data.n_series / max(1, shards)))
    ids = [list(s) for s in shards]
    parts = [client.scatter(shard_data(data, s)) for s in ids]
    span = (data.history[DATE].min(), data.history[DATE].max(), panel_flags(data))
    rows = [client.submit(shard_rows, model, p, *span, pure=False) for p in parts]
    sums = [client.submit(model.group_sums, r, p) for r, p in zip(rows, parts, strict=True)]
    means = client.submit(reduce_group_means, *sums)
    lengths = client.gather([client.submit(len, r) for r in rows])
    keep = sample_sizes(lengths, getattr(model, "max_train_rows", None))
    seed = int(model.params.get("random_state", 0))
    designs = [
        client.submit(shard_design, model, r, p, means, k, seed + i, pure=False)
        for i, (r, p, k) in enumerate(zip(rows, parts, keep, strict=True))
    ]
    with client.as_current():  # wait() finds the client as the current one
        wait(designs)
    del rows, sums, means, parts  # the workers free the rows before XGBoost's matrices
    booster = _train(model, designs, client)
    del designs
    model.model_ = _as_regressor(booster, _xgb_params(model))
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


def _train(model: GlobalForecaster, designs: list[Any], client: Any) -> xgb.Booster:
    """``xgboost.dask`` over the design partitions where they lie, with the local fit's
    parameters (threads: each worker's own)."""
    from dask import dataframe as dd
    from xgboost import dask as dxgb

    meta = pd.DataFrame(
        {c: pd.Series(dtype=np.float32) for c in model.feature_names_}
        | {TARGET_COL: pd.Series(dtype=float), WEIGHT_COL: pd.Series(dtype=float)}
    )
    frame = dd.from_delayed(designs, meta=meta, verify_meta=False)
    est = dxgb.DaskXGBRegressor(**{**_xgb_params(model), "n_jobs": None})
    est.client = client
    with client.as_current():  # xgboost.dask looks the client's type up via get_client()
        est.fit(frame[model.feature_names_], frame[TARGET_COL], sample_weight=frame[WEIGHT_COL])
    return est.get_booster()


# ---- the run's fitter ------------------------------------------------------------------------
@dataclass
class DaskFitter:
    """``fit(model, data)`` on the run's Dask cluster: one client for every fit of a run
    (final fit, backtest origins, retrain refit). Fits run one at a time: two
    ``xgboost.dask`` trainings at once can each hold a worker the other waits for."""

    client: Any
    shard_series: int

    def __call__(self, model: GlobalForecaster, data: SalesData) -> GlobalForecaster:
        return fit_on_dask(model, data, self.client, self._shards(model, data))

    def predict(
        self,
        model: GlobalForecaster,
        data: SalesData,
        origin: pd.Timestamp,
        with_baseline: bool = False,
    ) -> pd.DataFrame:
        """``model.predict(data, origin, with_baseline)``, shard by shard on the workers
        (:func:`salesflow.modelling.dask_predict.predict_on_dask`)."""
        from salesflow.modelling.dask_predict import predict_on_dask

        shards = self._shards(model, data)
        return predict_on_dask(model, data, origin, self.client, shards, with_baseline)

    def _shards(self, model: GlobalForecaster, data: SalesData) -> list[list[str]]:
        workers = len(self.client.scheduler_info().get("workers", {}))
        size = shard_size(data.n_series, workers, self.shard_series)
        return series_shards(data, model, size)


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
