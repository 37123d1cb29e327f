"""The forecaster: one global XGBoost model over all series, direct multi-horizon.

Each training row is (series, origin, horizon) with the features of ``features.build``;
the target is the sales of the target date divided by the series' scale, minus a seasonal
baseline (:func:`seasonal_base`); rows are weighted by scale x holiday weight, so the
absolute-error objective is WMAE in sales units.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from features.build import (
    FeatureSpec,
    Grid,
    feature_names,
    make_grid,
    origin_features,
    period_step,
    training_frame,
)
from salesflow.data.schema import DATE, ID, SalesData
from salesflow.modelling.coding import (
    code_covariates,
    learn_categories,
    open_values,
    static_codes,
)
from salesflow.modelling.groups import (
    GROUP_SOURCES,
    GroupSums,
    group_features,
    group_means_from,
    group_sums,
)
from salesflow.modelling.intervals import (
    add_bounds,
    cross_origin_multipliers,
    origin_median_quantiles,
    scaled_residuals,
)

INTERVAL_LEVELS = {80: (0.10, 0.90), 95: (0.025, 0.975)}
__all__ = ["GROUP_SOURCES", "GlobalForecaster", "PredictFeatures", "seasonal_base"]
# Settings added after champions were first pickled, whose behaviour without the attribute
# differs from the parameter's default (an old champion was never clipped at 0).
_LEGACY_SETTINGS: dict[str, Any] = {"min_forecast": None}


def seasonal_base(rows: pd.DataFrame, column: str = "seas_base") -> np.ndarray:
    """The scaled baseline the trees correct: last season's value from the denoised history
    times the shrunk level change (``seas_base``; for daily data the weekly profile,
    ``prof_base``), else the recent level (the mean of the last 4 periods, 28 days for daily
    data: :func:`features.build.recent_level`), else 0. Trees cannot extrapolate, so
    learning a correction to a baseline (not the level itself) keeps spikes like Christmas
    within reach. ``column``: models fitted before salesflow 0.2 corrected ``seas_lag``."""
    base = rows[column].to_numpy(dtype=float)
    for col in ("recent_level", "roll_mean_4", "lag_1"):
        if col in rows:
            base = np.where(np.isnan(base), rows[col].to_numpy(dtype=float), base)
    return np.nan_to_num(base, nan=0.0)


@dataclass
class PredictFeatures:
    """What :meth:`GlobalForecaster.predict_features` computes for some series (a shard):
    ``feats``, their origin features (unique_id, origin, ds, horizon, scale, features);
    ``open_``, the open covariate at each row's target date (None without one); ``sums``,
    the partial group sums (:func:`salesflow.modelling.groups.group_sums`);
    ``unknown_categories``, categorical values not seen in training, per column."""

    feats: pd.DataFrame
    open_: np.ndarray | None
    sums: GroupSums
    unknown_categories: dict[str, list[str]] = field(default_factory=dict)


class GlobalForecaster:
    """scikit-learn style: settings in ``__init__``, learned state in ``*_`` attributes."""

    def __init__(
        self,
        horizon: int = 39,
        spec: FeatureSpec | None = None,
        params: dict[str, Any] | None = None,
        min_train_history: int = 52,
        origin_stride: int = 2,
        holiday_weight: float = 5.0,
        min_forecast: float | None = 0.0,
        native_categorical: bool = False,
        max_train_rows: int | None = None,
    ) -> None:
        self.horizon = horizon
        self.spec = spec or FeatureSpec()
        self.params = dict(params or {})
        self.min_train_history = min_train_history
        self.origin_stride = origin_stride
        self.holiday_weight = holiday_weight
        self.min_forecast = min_forecast
        self.native_categorical = native_categorical
        self.max_train_rows = max_train_rows

    # ---- design matrix -------------------------------------------------------------
    def _static_codes(self, data: SalesData) -> pd.DataFrame:
        """unique_id plus one numeric column per key and static attribute."""
        return static_codes(data, self.categories_)

    def _learn_categories(self, data: SalesData) -> None:
        self.categories_, self.cov_categories_ = learn_categories(data)

    def _coded(self, frame: pd.DataFrame | None, what: str) -> pd.DataFrame | None:
        """``frame`` with each categorical covariate coded (see
        :func:`~salesflow.modelling.coding.code_covariates`)."""
        cats = getattr(self, "cov_categories_", {})
        return code_covariates(frame, cats, what, self.unknown_categories_)

    def _grid(
        self,
        history: pd.DataFrame,
        future,
        data: SalesData,
        extend: int = 0,
        holidays: pd.Series | None = None,
    ) -> Grid:
        """The model's grid of ``history`` and ``future``: categorical covariates coded,
        closed days missing, the configured holidays, series grouped. ``holidays`` (ds ->
        flag, the whole panel's ``is_holiday`` per date) replaces the flags of the dates it
        holds: a shard of the series then sees the panel's calendar, not its own part's."""
        self.unknown_categories_: dict[str, list[str]] = {}
        grid = make_grid(
            self._coded(history, "history"),
            self._coded(future, "future"),
            getattr(self, "grid_covariates_", self.covariates_),  # older models: numeric only
            data.freq,
            extend=extend,
            holidays=self.spec.holidays,
            open_column=self.spec.open_column,
        )
        if holidays is not None and len(holidays):
            pos = grid.dates.get_indexer(pd.DatetimeIndex(holidays.index))
            flags = grid.holiday.copy()
            flags[pos[pos >= 0]] = holidays.to_numpy(dtype=bool)[pos >= 0]
            grid = replace(grid, holiday=flags)
        return self._with_groups(grid, data)

    def _feature_types(self) -> list[str]:
        """XGBoost's type of each feature: with ``native_categorical``, ``c`` for coded
        categorical covariates and text statics (XGBoost's own categorical splits), ``q``
        otherwise; without it every feature is ``q`` (categories as ordinal codes)."""
        if not getattr(self, "native_categorical", False):
            return ["q"] * len(self.feature_names_)
        cat = {f"cov_{c}" for c in self.spec.categorical}
        cat |= {f"static_{c}" for c in self.categories_}
        return ["c" if f in cat else "q" for f in self.feature_names_]

    def _group_keys(self, data: SalesData) -> list[str]:
        """Key columns that group several series (e.g. store, dept); none for a single key."""
        return list(data.keys) if len(data.keys) > 1 else []

    def _design(
        self,
        frame: pd.DataFrame,
        data: SalesData,
        means: dict[str, pd.DataFrame] | None = None,
    ) -> pd.DataFrame:
        """The float32 matrix of :attr:`feature_names_` for the rows of ``frame``; group
        features from ``means`` (:func:`~salesflow.modelling.groups.group_means_from` of
        every part's sums), else from ``frame``'s own rows."""
        static = self._static_codes(data)
        x = frame[[ID]].merge(static, on=ID, how="left")
        feats = frame[self.dynamic_features_].reset_index(drop=True)
        out = pd.concat([feats, x.drop(columns=[ID]).reset_index(drop=True)], axis=1)
        out = pd.concat([out, self._group_features(frame, data, means)], axis=1)
        return out[self.feature_names_].astype(np.float32)

    def group_sums(self, frame: pd.DataFrame, data: SalesData) -> GroupSums:
        """Partial sums for the group features of ``frame``'s rows (feature rows of some of
        ``data``'s series): add the parts of every shard with
        :func:`~salesflow.modelling.groups.combine_group_sums`."""
        codes = data.static_frame().set_index(ID)
        return group_sums(frame, codes, self._group_keys(data), GROUP_SOURCES)

    def _group_features(
        self,
        frame: pd.DataFrame,
        data: SalesData,
        means: dict[str, pd.DataFrame] | None = None,
    ) -> pd.DataFrame:
        """Per key column k and source feature f, ``grp_<k>_<f>``: the mean of f over the
        series sharing k (e.g. all stores of a department) at the same origin and target
        date. The sources are scaled and computed before the origin, so this is too; it
        denoises last season's single-week values with the group's shape. ``means``: the
        group means over every shard (None: over ``frame``'s rows)."""
        codes = data.static_frame().set_index(ID)
        if means is None:
            means = group_means_from(self.group_sums(frame, data))
        return group_features(frame, codes, means, GROUP_SOURCES)

    def _with_groups(self, grid: Grid, data: SalesData) -> Grid:
        """``grid`` with its series labelled by the last key (e.g. the department of a
        store x department series): the series that share a seasonal shape, denoised
        together (:func:`features.seasonal.denoised_history`). No groups for a single key."""
        if len(data.keys) < 2:
            return grid
        labels = data.static_frame().set_index(ID)[data.keys[-1]].astype(str)
        return replace(grid, group=labels.reindex(grid.ids).fillna("").to_numpy(dtype=str))

    # ---- fit / predict ---------------------------------------------------------------
    def training_rows(self, data: SalesData) -> pd.DataFrame:
        """Leak-free training rows of ``data``: one per (series, origin, horizon) whose
        target is observed. Columns: unique_id, origin, ds, scale, y, then the features."""
        self.learn_layout(data)
        grid = self._grid(data.history, None, data)
        end = len(grid.dates)
        return training_frame(
            grid, end, self.horizon, self.spec, self.min_train_history, self.origin_stride
        )

    def learn_layout(self, data: SalesData) -> None:
        """What :meth:`training_rows` learns of ``data`` before building rows: frequency,
        keys, covariates, categories, the feature names (a Dask fit learns it once on the
        whole panel, then builds each shard's rows on the workers)."""
        self.freq_, self.keys_, self.covariates_ = data.freq, list(data.keys), list(data.covariates)
        self.static_cols_ = list(data.static)
        categorical = list(getattr(data, "categorical", []))
        self.grid_covariates_ = [*self.covariates_, *categorical]
        self.spec = replace(
            self.spec, open_column=getattr(data, "open", None), categorical=tuple(categorical)
        )
        self._learn_categories(data)
        self.dynamic_features_ = feature_names(self.spec, self.grid_covariates_)
        self.group_features_ = [
            f"grp_{k}_{f}" for k in self._group_keys(data) for f in GROUP_SOURCES
        ]
        self.feature_names_ = (
            self.dynamic_features_
            + self.group_features_
            + [f"static_{c}" for c in [*data.keys, *data.static]]
        )

    def fit(self, data: SalesData, rows: pd.DataFrame | None = None) -> GlobalForecaster:
        """Learn from ``data.history`` (all of it is treated as known); ``rows`` are the
        output of :meth:`training_rows` on the same data, built here when not given."""
        t0 = time.perf_counter()
        train = self.training_rows(data) if rows is None else rows
        if rows is not None and not hasattr(self, "feature_names_"):
            raise ValueError("rows given to fit() must come from this model's training_rows()")
        keep = self._row_sample(len(train))
        if keep is None:
            x = self._design(train, data)
        else:  # group means read every row, as at prediction; the matrix only the sample's
            means = group_means_from(self.group_sums(train, data))
            x = self._design(train.iloc[keep], data, means)
        hol = np.where(train["is_holiday"].to_numpy() > 0, self.holiday_weight, 1.0)
        self.base_column_ = "prof_base" if self.spec.weekly_season else "seas_base"
        base = seasonal_base(train, self.base_column_)
        target = train["y"].to_numpy() / train["scale"].to_numpy() - base
        self.model_ = xgb.XGBRegressor(
            objective="reg:absoluteerror",
            enable_categorical=True,
            feature_types=self._feature_types(),
            **self.params,
        )
        weight = train["scale"].to_numpy() * hol
        if keep is not None:
            target, weight = target[keep], weight[keep]
        self.model_.fit(x, target, sample_weight=weight)
        self.trained_until_ = data.last_date
        self.n_train_rows_ = len(target)
        self.n_candidate_rows_ = len(train)
        self.n_series_ = data.n_series
        self.train_series_ = sorted(data.history[ID].unique())
        self.fit_seconds_ = time.perf_counter() - t0
        self.residual_quantiles_: pd.DataFrame | None = None
        return self

    def _row_sample(self, n: int) -> np.ndarray | None:
        """Sorted positions of the ``max_train_rows`` rows the trees learn from, drawn
        without replacement with the model's seed (the same rows for the same data); None
        when every row is used. The absolute-error objective refits each leaf to the median
        of its rows after every tree, so the fit time follows the row count: the cap bounds
        it however long the history grows."""
        cap = getattr(self, "max_train_rows", None)
        if cap is None or n <= cap:
            return None
        rng = np.random.default_rng(int(self.params.get("random_state", 0)))
        return np.sort(rng.choice(n, size=cap, replace=False))

    def next_origin(self, data: SalesData) -> pd.Timestamp:
        """The first period after the data's last observation."""
        return data.last_date + period_step(data.freq)

    def predict(
        self,
        data: SalesData,
        origin: pd.Timestamp | str | None = None,
        with_baseline: bool = False,
    ) -> pd.DataFrame:
        """Forecast every series with history before ``origin`` for horizons 1..horizon.

        ``origin`` defaults to the period after the last observation. Observations at or
        after ``origin`` are never read. Columns out: unique_id, the keys, origin, ds,
        horizon, forecast, scale, and lo_80/hi_80/lo_95/hi_95 once intervals are set;
        ``with_baseline``: also ``baseline``, the seasonal baseline the trees corrected
        (``forecast - baseline`` is the model's correction, in sales units).
        """
        pf = self.predict_features(data, origin)
        return self.finish_predict(pf, data, group_means_from(pf.sums), with_baseline)

    def predict_features(
        self,
        data: SalesData,
        origin: pd.Timestamp | str | None = None,
        holidays: pd.Series | None = None,
        start: pd.Timestamp | None = None,
    ) -> PredictFeatures:
        """The first half of :meth:`predict` for ``data``'s series (all, or a shard holding
        whole groups of the last key): origin features and partial group sums. When
        ``data`` is a shard: ``holidays``, the whole panel's flags per date, and ``start``,
        its first date (the shard's grid then has the panel's dates: the same numbers)."""
        self._check_fitted()
        origin = pd.Timestamp(origin) if origin is not None else self.next_origin(data)
        known = data.as_of(origin - period_step(data.freq))
        history = known.history
        if start is not None and len(history) and history[DATE].min() > start:
            pad = pd.DataFrame({ID: [history[ID].iloc[0]], DATE: [pd.Timestamp(start)]})
            history = pd.concat([history, pad], ignore_index=True)  # no target: a date only
        grid = self._grid(history, known.future, data, self.horizon, holidays)
        unknown = dict(self.unknown_categories_)
        feats = origin_features(grid, grid.index_of(origin), self.horizon, self.spec)
        feats = feats.drop(columns=["y"])
        return PredictFeatures(
            feats,
            open_values(feats, grid, self.spec.open_column),
            self.group_sums(feats, data),
            unknown,
        )

    def finish_predict(
        self,
        pf: PredictFeatures,
        data: SalesData,
        means: dict[str, pd.DataFrame],
        with_baseline: bool = False,
    ) -> pd.DataFrame:
        """The second half of :meth:`predict`: the forecasts of ``pf``'s rows, with group
        features from ``means`` (the group means over every shard); columns as predict's."""
        feats = pf.feats
        resid = self.model_.predict(self._design(feats, data, means))
        # A champion pickled before the baseline change has no base_column_: raw seas_lag.
        base = seasonal_base(feats, getattr(self, "base_column_", "seas_lag"))
        pred = (base + resid) * feats["scale"].to_numpy()
        out = feats[[ID, "origin", DATE, "horizon", "scale"]].copy()
        out["horizon"] = out["horizon"].astype(int)
        out["forecast"] = pred.astype(float)
        if with_baseline:
            out["baseline"] = base * feats["scale"].to_numpy()
        out = out.merge(data.static_frame()[[ID, *self.keys_]], on=ID, how="left")
        out = self._add_intervals(out)
        return self._closed_and_floor(out, pf.open_)

    def _closed_and_floor(self, out: pd.DataFrame, open_: np.ndarray | None) -> pd.DataFrame:
        """Forecasts and bounds clipped at ``min_forecast`` (None: not clipped); with an
        open covariate (``open_``, per row of ``out``), a ``closed`` column and exactly 0
        on the days it says closed."""
        values = [c for c in ("forecast", "lo_80", "hi_80", "lo_95", "hi_95") if c in out]
        floor = getattr(self, "min_forecast", None)
        if floor is not None:
            out[values] = out[values].clip(lower=floor)
        if open_ is None:
            return out
        out["closed"] = open_ == 0
        out.loc[out["closed"], values] = 0.0
        return out

    def set_intervals(self, backtest: pd.DataFrame) -> GlobalForecaster:
        """Learn the 80/95 % bounds from backtest rows (columns: origin, horizon, y,
        forecast, scale; closed days left out): the median over origins of each origin's
        scaled-residual quantiles, pooled over horizons along a fitted spread per horizon
        (``residual_quantiles_``), and a width factor per level from applying one origin's
        quantiles to another's rows (``interval_multipliers_``; 1.0 with one origin). See
        :mod:`salesflow.modelling.intervals`."""
        res = scaled_residuals(backtest)
        qs = sorted({q for pair in INTERVAL_LEVELS.values() for q in pair})
        self.residual_quantiles_ = origin_median_quantiles(res, self.horizon, qs)
        self.interval_multipliers_ = cross_origin_multipliers(res, self.horizon, INTERVAL_LEVELS)
        if "closed" in backtest:
            backtest = backtest[~backtest["closed"].astype(bool)]
        # The backtest's forecasts are the reference for prediction drift in monitoring.
        last = (
            backtest[backtest["origin"] == backtest["origin"].max()]
            if "origin" in backtest
            else backtest
        )
        self.reference_forecasts_ = last[[c for c in (ID, DATE, "forecast") if c in last]].copy()
        return self

    def _add_intervals(self, out: pd.DataFrame) -> pd.DataFrame:
        """``out`` with lo/hi 80/95 once intervals are set; a champion saved before the
        width factors existed has none (factor 1: its bounds as before)."""
        q = getattr(self, "residual_quantiles_", None)
        if q is None:
            return out
        mult = getattr(self, "interval_multipliers_", None)
        return add_bounds(out, q, self.horizon, INTERVAL_LEVELS, mult)

    def clone(self) -> GlobalForecaster:
        """An unfitted forecaster with the same settings (sklearn's ``clone``): every
        parameter of ``__init__``, read from its signature, so a new setting is kept too. A
        champion pickled before a setting existed gets the value it behaved as."""
        params = inspect.signature(type(self)).parameters
        return type(self)(
            **{n: getattr(self, n, _LEGACY_SETTINGS.get(n, p.default)) for n, p in params.items()}
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ValueError("this GlobalForecaster is not fitted yet: call fit(data) first")

    def describe(self) -> dict[str, Any]:
        """Parameters worth logging: horizon, features spec, XGBoost params, training size."""
        return {
            "horizon": self.horizon,
            "min_train_history": self.min_train_history,
            "origin_stride": self.origin_stride,
            "holiday_weight": self.holiday_weight,
            "min_forecast": getattr(self, "min_forecast", None),
            "native_categorical": getattr(self, "native_categorical", False),
            "max_train_rows": getattr(self, "max_train_rows", None),
            **{f"feat_{k}": v for k, v in asdict(self.spec).items()},
            **{f"xgb_{k}": v for k, v in self.params.items()},
        }
