"""Forecasting a fitted model on a Dask cluster, shard by shard (training's backtest and
the retrain's holdout, ``compute.engine: dask``).

The batch forecast has its own sharded path with Prefect task runs
(:mod:`salesflow.modelling.scoring`); training's evaluation calls
:meth:`GlobalForecaster.predict` once per origin, which builds every series' origin
features in the flow's process: at scale the largest thing that process holds. Here each
shard of whole last-key groups builds its features on a worker
(:meth:`GlobalForecaster.predict_features`, with the whole panel's first date and holiday
flags), the partial group sums come back and are added into the panel's group means, and
each worker finishes its shard's forecasts (:meth:`GlobalForecaster.finish_predict`). Only
the forecasts come back: the same rows and numbers as ``model.predict(data, origin)``.
No Prefect here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from salesflow.compute.shards import shard_data
from salesflow.data.schema import DATE, ID, SalesData
from salesflow.modelling.dask_fit import panel_flags
from salesflow.modelling.groups import combine_group_sums, group_means_from
from salesflow.modelling.model import GlobalForecaster, PredictFeatures


def _features(
    model: GlobalForecaster,
    shard: SalesData,
    origin: pd.Timestamp,
    holidays: pd.Series,
    start: pd.Timestamp,
) -> PredictFeatures:
    return model.predict_features(shard, origin, holidays, start)


def _sums(features: PredictFeatures) -> Any:
    return features.sums


def _finish(
    model: GlobalForecaster,
    features: PredictFeatures,
    shard: SalesData,
    means: dict[str, pd.DataFrame],
    with_baseline: bool,
) -> pd.DataFrame:
    return model.finish_predict(features, shard, means, with_baseline)


def predict_on_dask(
    model: GlobalForecaster,
    data: SalesData,
    origin: pd.Timestamp,
    client: Any,
    shards: Sequence[Sequence[str]],
    with_baseline: bool = False,
) -> pd.DataFrame:
    """``model.predict(data, origin, with_baseline)`` computed on ``client``'s cluster, one
    task per shard of series ids (whole groups of the last key:
    :func:`salesflow.compute.shards.series_shards`). Rows sorted by series and horizon."""
    origin = pd.Timestamp(origin)
    flags = panel_flags(data)
    start = pd.Timestamp(data.history[DATE].min())
    shared = client.scatter(model, broadcast=True)
    parts = [client.scatter(shard_data(data, list(ids))) for ids in shards]
    feats = [client.submit(_features, shared, p, origin, flags, start, pure=False) for p in parts]
    sums = client.gather([client.submit(_sums, f) for f in feats])
    means = group_means_from(combine_group_sums(sums))
    done = [
        client.submit(_finish, shared, f, p, means, with_baseline, pure=False)
        for f, p in zip(feats, parts, strict=True)
    ]
    out = pd.concat(client.gather(done), ignore_index=True)
    return out.sort_values([ID, "horizon"], kind="stable").reset_index(drop=True)
