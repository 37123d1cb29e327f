"""How big salesflow's objects are, for Dask's memory manager (a ``dask.sizeof`` plugin).

Dask decides when a worker spills results to disk from ``dask.sizeof.sizeof`` of each one.
Unknown objects count as ``sys.getsizeof``: a few dozen bytes for a :class:`SalesData` shard
of a million rows, and prefect-dask keeps each task's result inside the Prefect ``State``
the task returns, which counts as small too. Without this plugin the shards a worker holds
are unmanaged memory to Dask (it spills by size from 60 % of the limit, and only evicts
blindly once the process passes 70 %): at a million series the nanny killed workers at
95 % of their limit (``KilledWorker``). With it, the shards, partitions and pieces of a
batch forecast count as the pandas frames they hold, so a worker spills them before that.

Registered through the ``dask.sizeof`` entry point of ``pyproject.toml``: Dask loads it in
every process that imports ``dask.sizeof`` (scheduler, workers, the flow's process), with
salesflow installed there. No Prefect import unless Prefect is already loaded.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any


def register(sizeof: Any) -> None:
    """Teach ``sizeof`` (Dask's dispatch) salesflow's dataclasses and Prefect's states."""
    sizeof.register_lazy("salesflow")(lambda: _register_salesflow(sizeof))
    sizeof.register_lazy("prefect")(lambda: _register_prefect(sizeof))


def _register_salesflow(sizeof: Any) -> None:
    from salesflow.data.schema import SalesData
    from salesflow.modelling.model import PredictFeatures
    from salesflow.modelling.scoring import ShardPart, ShardSummary

    for cls in (SalesData, PredictFeatures, ShardPart, ShardSummary):
        sizeof.register(cls)(lambda obj: _fields_size(sizeof, obj))


def _register_prefect(sizeof: Any) -> None:
    from prefect.client.schemas.objects import State

    sizeof.register(State)(lambda state: _state_size(sizeof, state))


def _fields_size(sizeof: Any, obj: Any) -> int:
    """A dataclass: its own size and its fields' (frames counted by Dask's pandas rules)."""
    return sys.getsizeof(obj) + sum(
        int(sizeof(getattr(obj, f.name))) for f in dataclasses.fields(obj)
    )


def _state_size(sizeof: Any, state: Any) -> int:
    """A Prefect state: the result it holds in memory (``data``, or a result record's
    ``result``); a result persisted elsewhere counts as the record only."""
    data = getattr(state, "data", None)
    held = getattr(data, "result", data)
    return sys.getsizeof(state) + int(sizeof(held))
