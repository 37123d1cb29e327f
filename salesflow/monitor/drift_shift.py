"""How much a drifted column moved, in its own units, in sigma and per store: the business
side of a drift check (:mod:`salesflow.drift` decides *whether*; this says *by how much*).

The current window is compared with the same periods a season earlier, level-adjusted
(the ``seasonal`` reference of :mod:`salesflow.drift_windows`: what the champion's training
data leads one to expect); sigma is the column's standard deviation over the champion's
reference window. Changes are measured per group of the first key (e.g. per store); a group
*moved* when its change is at least :data:`MOVED_SIGMA` sigma (covariates) or
:data:`MOVED_SHARE` of its level (sales) in the direction of the overall change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from salesflow.monitor.drift_result import ColumnShift

MOVED_SIGMA = 0.5
MOVED_SHARE = 0.10


def _groups(obs: pd.DataFrame, group: str | None, index: pd.Index) -> pd.Series:
    if group is None:
        return pd.Series("all", index=index)
    return obs.loc[index, group].astype(str)


def covariate_shift(
    obs: pd.DataFrame,
    col: str,
    group: str | None,
    seasonal: pd.Series,
    current: pd.Series,
    reference: pd.Series,
) -> ColumnShift:
    """Change of ``col``'s mean (units and sigma), current vs the seasonal reference.

    ``obs``: the rows the three series index (with the ``group`` column); ``reference``: the
    values of the champion's reference window, whose std is sigma.
    """
    sigma = float(reference.std()) if len(reference) > 1 else float("nan")
    by_group = (
        current.groupby(_groups(obs, group, current.index)).mean()
        - seasonal.groupby(_groups(obs, group, seasonal.index)).mean()
    ).dropna()
    overall = float(current.mean() - seasonal.mean())
    ok = np.isfinite(sigma) and sigma > 0
    moved = _moved(by_group / sigma if ok else by_group * np.nan, overall, MOVED_SIGMA)
    change = float(by_group[moved].mean()) if moved else overall
    return ColumnShift(
        column=col,
        change=change,
        sigma=change / sigma if ok else None,
        share=None,
        group=group,
        moved=moved,
        n_groups=len(by_group),
    )


def sales_shift(
    obs: pd.DataFrame,
    ids: pd.Series,
    group: str | None,
    seasonal: pd.Series,
    current: pd.Series,
    name: str = "sales",
) -> ColumnShift:
    """Relative change of mean sales per group, current vs the seasonal reference, over the
    series present in both (``ids``: the series id of every row of ``obs``)."""
    both = set(ids[current.index]) & set(ids[seasonal.index])
    cur = current[ids[current.index].isin(both)]
    ref = seasonal[ids[seasonal.index].isin(both)]
    cur_mean = cur.groupby(_groups(obs, group, cur.index)).mean()
    ref_mean = ref.groupby(_groups(obs, group, ref.index)).mean()
    by_group = (cur_mean / ref_mean.where(ref_mean > 0) - 1).dropna()
    total = float(ref.mean())
    overall = float(cur.mean() / total - 1) if total > 0 else float("nan")
    moved = _moved(by_group, overall, MOVED_SHARE)
    share = float(by_group[moved].mean()) if moved else overall
    return ColumnShift(
        column=name,
        change=float(cur.mean() - ref.mean()) if len(cur) and len(ref) else float("nan"),
        sigma=None,
        share=share if np.isfinite(share) else None,
        group=group,
        moved=moved,
        n_groups=len(by_group),
    )


def _moved(by_group: pd.Series, overall: float, at_least: float) -> list[str]:
    """Groups whose change is >= ``at_least`` in the overall change's direction, in key order."""
    sign = 1.0 if not np.isfinite(overall) or overall >= 0 else -1.0
    hit = by_group[(sign * by_group) >= at_least]
    return sorted(hit.index.astype(str), key=_natural)


def _natural(label: str) -> tuple[int, float | str]:
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)
