"""The typed sections of salesflow's settings (one per concern), with their defaults and
checks; :mod:`salesflow.settings` layers them from YAML and the environment."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from salesflow.config.identifiers import check_identifier


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftInjection(_Section):
    """Synthetic drift from ``start`` on: covariate shift and/or a level shift of sales."""

    start: dt.date
    covariate_shift: dict[str, float] = Field(
        default_factory=dict,
        description="covariate -> added offset in units of that covariate's std",
    )
    level_shift: float = Field(0.0, description="relative change of sales, e.g. 0.3 = +30%")
    stores: list[int] | None = Field(None, description="only these stores drift (None: all)")


class SyntheticSection(_Section):
    n_stores: int = Field(6, ge=1, le=10_000)
    n_depts: int = Field(8, ge=1, le=1_000)
    start: dt.date = dt.date(2010, 2, 5)
    periods: int = Field(143, ge=10)
    freq: Literal["W-FRI", "D"] = "W-FRI"
    seed: int = 42
    ragged_share: float = Field(0.15, ge=0, le=1, description="share of series starting late")
    drift: DriftInjection | None = None
    parts: int = Field(
        1,
        ge=1,
        description="partitions of whole stores, each from its own child seed (1: one panel)",
    )

    @model_validator(mode="after")
    def _parts_fit(self) -> SyntheticSection:
        if self.parts > self.n_stores:
            raise ValueError(
                f"data.synthetic.parts ({self.parts}) is more than n_stores ({self.n_stores}): "
                "every part holds at least one store"
            )
        return self


class LongFormatSection(_Section):
    """Column mapping of a generic long-format file or table."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # Read from YAML as ``keys``; the attribute is not named ``keys`` because Prefect (and
    # dict()) would take a model with a ``keys`` attribute for a mapping.
    key_columns: list[str] = Field(
        default_factory=lambda: ["store", "dept"], min_length=1, validation_alias="keys"
    )
    date: str = "date"
    target: str = "sales"
    holiday: str | None = None
    covariates: list[str] = Field(default_factory=list)
    static: list[str] = Field(default_factory=list)
    date_format: str | None = None
    encoding: str = Field("utf-8", description="text encoding of CSV files, e.g. latin-1")
    covariates_path: str | None = Field(None, description="separate file of known covariates")
    covariate_keys: list[str] | None = Field(None, description="keys of covariates_path rows")
    history_file: str | None = Field(
        None,
        description="when data.path is a folder: the history file inside it; relative "
        "static_path, future_path and covariates_path are then read inside that folder too",
    )
    static_path: str | None = Field(
        None,
        description="file of static attributes (one row per static_keys); the static "
        "columns come from it",
    )
    static_keys: list[str] | None = Field(
        None, description="columns static_path rows are joined on (None: keys); among keys"
    )
    future_path: str | None = Field(
        None,
        description="file of rows after the history (keys, date, holiday, covariates, "
        "categorical; no target): the known future",
    )
    categorical: list[str] = Field(
        default_factory=list, description="categorical covariates, read as text (e.g. codes)"
    )
    known_ahead: list[str] = Field(
        default_factory=list,
        description="covariates/categorical that must be known for every target date (from "
        "the data or future_path); the others carry their last value forward",
    )
    open: str | None = Field(
        None, description="numeric covariate, 1 = open, 0 = closed; must be known_ahead"
    )
    holiday_none: list[str] | None = Field(
        None,
        description="when the holiday column holds codes: the codes meaning 'no holiday' (e.g. "
        "['0']); any other code is a holiday. None: the column is a true/false flag",
    )

    @field_validator("holiday_none", mode="before")
    @classmethod
    def _codes_as_text(cls, v: object) -> object:
        # YAML reads [0] as a number; the codes are compared as text.
        return [str(c) for c in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _roles(self) -> LongFormatSection:
        both = sorted(set(self.covariates) & set(self.categorical))
        if both:
            raise ValueError(
                f"data.long: {both} are in both covariates (numeric) and categorical (text): "
                "list each column once"
            )
        varying = [*self.covariates, *self.categorical]
        unknown = [n for n in self.known_ahead if n not in varying]
        if unknown:
            raise ValueError(
                f"data.long.known_ahead {unknown} are not in data.long.covariates or "
                f"data.long.categorical ({varying}): add them there or drop them"
            )
        if self.open is not None and self.open not in self.covariates:
            raise ValueError(
                f"data.long.open {self.open!r} must be one of data.long.covariates "
                f"({self.covariates}): a numeric column, 1 = open, 0 = closed"
            )
        if self.open is not None and self.open not in self.known_ahead:
            raise ValueError(
                f"data.long.open {self.open!r} must be in data.long.known_ahead: a closed day "
                "is never guessed from the last value"
            )
        if self.holiday_none is not None and self.holiday is None:
            raise ValueError("data.long.holiday_none needs data.long.holiday (the code column)")
        if self.future_path and self.covariates_path:
            raise ValueError(
                "data.long: set future_path or covariates_path, not both (covariates_path "
                "holds history and future covariates in one file)"
            )
        skeys = self.static_keys or []
        if [k for k in skeys if k not in self.key_columns] or (skeys and not self.static_path):
            raise ValueError(
                f"data.long.static_keys {skeys} must be among data.long.keys "
                f"{self.key_columns} and need data.long.static_path"
            )
        return self


class DataSection(_Section):
    source: Literal["synthetic", "walmart", "long", "sql"] = "synthetic"
    path: str | None = Field(None, description="file or folder for walmart/long sources")
    url: str | None = Field(None, description="SQLAlchemy URL for the sql source")
    url_env: str | None = Field(None, description="env var holding the SQL URL (secrets)")
    table: str | None = None
    query: str | None = None
    sql_parts: int = Field(
        1,
        ge=1,
        le=4096,
        description="sql source, Dask batch forecast: read in this many partitions (sets of "
        "the first key's values, e.g. whole stores), each by one worker",
    )
    freq: Literal["W-FRI", "W-SUN", "W-MON", "W-SAT", "W-THU", "W-WED", "W-TUE", "D"] = "W-FRI"
    as_of: dt.date | None = Field(None, description="last date to use; None: the data's last")
    synthetic: SyntheticSection = SyntheticSection()
    long: LongFormatSection = LongFormatSection()

    @model_validator(mode="after")
    def _source_needs(self) -> DataSection:
        if self.source in ("walmart", "long") and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if self.source == "sql" and not (self.url or self.url_env):
            raise ValueError("data.url or data.url_env is required when data.source is 'sql'")
        if self.source == "sql" and not (self.table or self.query):
            raise ValueError("data.table or data.query is required when data.source is 'sql'")
        return self


class ValidationSection(_Section):
    min_history: int = Field(13, ge=1, description="minimum observations per series")
    max_short_series_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="series below min_history are dropped with a warning while their share "
        "is at most this; above it the gate fails",
    )
    max_gap_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="share of rows that may follow a gap (missing periods) in their series; "
        "real retail series have some (Walmart: 1.3%), more means a broken extract",
    )
    target_min: float = -1e6
    target_max: float = 1e8
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "temperature": (-60.0, 130.0),
            "fuel_price": (0.0, 20.0),
            "cpi": (0.0, 1_000.0),
            "unemployment": (0.0, 100.0),
        }
    )
    sample_rows: int = Field(5, ge=1, le=100)
    today: dt.date | None = Field(
        None,
        description="the run's 'today': history dated after it fails the gate (data from the "
        "future is a broken extract); None: the current date (UTC)",
    )
    max_future_periods: int | None = Field(
        None,
        ge=1,
        description="future covariates may reach this many periods after today; None: the "
        "model's horizon",
    )


class HolidaysSection(_Section):
    calendar: Literal["us_retail", "none"] = Field(
        "us_retail",
        description="us_retail: Super Bowl, Labor Day, Thanksgiving, Christmas (the Walmart "
        "data's weeks, with their own features); none: only the data's holiday column and "
        "the country calendar",
    )
    country: str | None = Field(
        None, description="ISO country code of the holidays library (e.g. DE, US); null: none"
    )
    subdiv: str | None = Field(None, description="a state/province code of that country")

    @model_validator(mode="after")
    def _known_country(self) -> HolidaysSection:
        if self.country:
            import holidays

            if self.country not in holidays.list_supported_countries():
                raise ValueError(
                    f"features.holidays.country {self.country!r} is not a country code of the "
                    "holidays library (e.g. DE, US, FR)"
                )
            subs = holidays.list_supported_countries()[self.country]
            if self.subdiv and self.subdiv not in subs:
                raise ValueError(
                    f"features.holidays.subdiv {self.subdiv!r} is not a subdivision of "
                    f"{self.country} (one of {subs[:20]})"
                )
        return self


# Defaults that follow data.freq (a null in the YAML): daily data has a weekly and a yearly
# season; weekly data a yearly one.
FREQ_DEFAULTS = {
    "D": {
        "season_length": 364,
        "weekly_season": 7,
        "recent_lags": 7,
        "rolling_windows": [7, 28, 91, 364],
        "level_window": 56,
    },
    "W": {
        "season_length": 52,
        "weekly_season": 0,
        "recent_lags": 4,
        "rolling_windows": [4, 13, 52],
        "level_window": 8,
    },
}


class FeaturesSection(_Section):
    season_length: int | None = Field(
        None, ge=1, description="the yearly season in periods; null: 364 daily, 52 weekly"
    )
    weekly_season: int | None = Field(
        None, ge=0, description="the weekly season of daily data; null: 7 daily, 0 (none) weekly"
    )
    recent_lags: int | None = Field(
        None, ge=1, le=60, description="last k observations before origin; null: 7 daily, 4 weekly"
    )
    rolling_windows: list[int] | None = Field(
        None, description="null: [7, 28, 91, 364] daily, [4, 13, 52] weekly"
    )
    profile_weeks: int = Field(
        13, ge=1, description="daily data: weeks of the same weekday in the weekly profile"
    )
    profile_match: list[str] = Field(
        default_factory=list,
        description="daily data: covariates a profile day must share with the target day "
        "(e.g. [Promo])",
    )
    holidays: HolidaysSection = HolidaysSection()
    future_covariates: bool = Field(
        True,
        description="use covariates of the target date (known in advance, as in the Walmart "
        "data); False: use their last value before the origin (strict mode)",
    )
    denoise_rank: int = Field(
        5,
        ge=0,
        description="rank of the truncated SVD that denoises last season's values within each "
        "group of series sharing the last key (e.g. a department across stores); 0: off",
    )
    level_window: int | None = Field(
        None,
        ge=1,
        description="periods compared with the same periods a season earlier; null: 56 "
        "daily, 8 weekly",
    )
    level_shrink: float = Field(
        0.5, ge=0, le=1, description="share of that level change applied to the baseline"
    )
    two_season_weight: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="weight of the value two seasons back (carried to last season's level) "
        "in the seasonal baseline, where the history has it; 0: last season only",
    )

    def for_freq(self, freq: str) -> FeaturesSection:
        """This section with every null default filled from ``freq`` (:data:`FREQ_DEFAULTS`)."""
        defaults = FREQ_DEFAULTS["D" if freq == "D" else "W"]
        fill = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return self.model_copy(update=fill) if fill else self


class ModelSection(_Section):
    name: str = "salesflow-forecaster"
    horizon: int = Field(39, ge=1, le=520)
    origin_stride: int = Field(4, ge=1, description="use every k-th period as a training origin")
    min_train_history: int = Field(52, ge=1, description="origins need this much history")
    n_estimators: int = Field(400, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_bin: int = Field(256, ge=2, le=1024, description="histogram bins per feature (hist)")
    max_depth: int = Field(6, ge=1, le=20)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(1.0, ge=0)
    max_train_rows: int | None = Field(
        150000,
        ge=1000,
        description="the trees learn from at most this many training rows: a seeded random "
        "sample drawn after the features are built (null: all rows)",
    )
    n_jobs: int = Field(2, ge=1)
    concurrent_fits: int = Field(
        3,
        ge=1,
        le=8,
        description="model fits a training run makes at a time: 2 runs the final fit beside "
        "the backtest, 3 also fits two backtest origins at once; 1: one after the other "
        "(the least memory)",
    )
    seed: int = 7
    native_categorical: bool = Field(
        False,
        description="categorical covariates and text statics as XGBoost categorical features "
        "(true) or as ordinal codes (false)",
    )
    min_forecast: float | None = Field(
        0.0, description="forecasts and bounds are clipped at this value; null: not clipped"
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}", v):
            raise ValueError("model.name may hold letters, digits, '_', '.', '-' only")
        return v


class BacktestSection(_Section):
    n_origins: int = Field(3, ge=1, le=50)
    step: int = Field(13, ge=1, description="periods between backtest origins")
    holiday_weight: float = Field(5.0, ge=1)


class MlflowSection(_Section):
    tracking_uri: str | None = Field(None, description="None: sqlite file under paths.local_dir")
    experiment: str = "salesflow"
    champion_alias: str = "champion"
    require_tracking_uri: bool = Field(
        False,
        description="tracking_uri must be set (SALESFLOW_MLFLOW__TRACKING_URI): no local fallback",
    )


class WarehouseSection(_Section):
    url: str | None = Field(None, description="None: sqlite file under paths.local_dir")
    url_env: str | None = Field(
        "SALESFLOW_WAREHOUSE_URL", description="env var that, when set, overrides url (secrets)"
    )
    require_url: bool = Field(
        False,
        description="the variable named by url_env must be set: no fallback to url or SQLite",
    )
    table: str = "sales_forecasts"
    runs_table: str = Field("forecast_runs", description="one row per forecast write")
    schema_name: str | None = None
    retries: int = Field(3, ge=0, le=20, description="retries when the warehouse is unreachable")
    retry_delay_seconds: float = Field(10.0, ge=0)

    @field_validator("table", "runs_table", "schema_name")
    @classmethod
    def _identifier(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v, "table/schema")

    @model_validator(mode="after")
    def _required_needs_variable(self) -> WarehouseSection:
        if self.require_url and not self.url_env:
            raise ValueError("warehouse.require_url needs warehouse.url_env (the variable name)")
        return self


class DriftSection(_Section):
    """Evidently drift checks: per-column test and the rule that calls the whole data drifted."""

    num_method: Literal["ks", "wasserstein", "psi", "jensenshannon", "kl_div", "anderson"] = "ks"
    threshold: float = Field(
        0.05,
        gt=0,
        description="per-column threshold: a p-value for ks/anderson (drift when below), "
        "a distance for the others (drift when at or above)",
    )
    target_method: Literal["ks", "wasserstein", "psi", "jensenshannon", "kl_div", "anderson"] = (
        "wasserstein"
    )
    target_threshold: float = Field(
        0.25,
        gt=0,
        description="target (sales scaled per series) drift: KS flags ~1 in 4 stable "
        "synthetic panels, a normed Wasserstein distance >= 0.25 separates a 10% level shift",
    )
    min_drifted_columns: int = Field(3, ge=1, description="drift when >= this many columns")
    min_drifted_share: float = Field(0.3, gt=0, le=1, description="...or >= this share")
    current_periods: int = Field(13, ge=1, description="latest window compared")
    reference_periods: int = Field(
        26,
        ge=1,
        description="the last periods of the champion's training data: recent conditions, so a "
        "change the champion already trained on (e.g. a markdown programme that started "
        "months ago) is not drift",
    )
    max_rows: int = Field(200_000, ge=1_000, description="rows sampled per window")
    columns: list[str] | None = Field(None, description="None: the covariates")


class MonitorSection(_Section):
    drift: DriftSection = DriftSection()
    max_wmae_vs_backtest: float = Field(
        1.5, gt=0, description="degraded when realized WMAE > this x the backtest WMAE"
    )
    accuracy_table: str = "forecast_accuracy"
    audit_table: str = "model_audit"
    report_dir: Path = Field(Path("reports"), description="relative to paths.local_dir")

    @field_validator("accuracy_table", "audit_table")
    @classmethod
    def _tables(cls, v: str) -> str:
        return WarehouseSection._identifier(v)  # type: ignore[return-value]

    @field_validator("report_dir")
    @classmethod
    def _inside_local_dir(cls, v: Path) -> Path:
        if v.is_absolute() or _escapes(v):
            raise ValueError(
                f"monitor.report_dir must be a folder inside paths.local_dir, got {str(v)!r}: "
                "use a relative path without '..' (e.g. reports)"
            )
        return v


class PolicySection(_Section):
    """When a challenger replaces the champion, and when the champion is rolled back."""

    min_improvement: float = Field(
        0.02, ge=0, lt=1, description="challenger WMAE <= (1 - this) x champion WMAE"
    )
    must_beat_seasonal_naive: bool = True
    max_abs_bias_share: float = Field(
        0.10, gt=0, description="|bias| <= this x mean |actual| on the holdout"
    )
    holdout_periods: int = Field(13, ge=1, description="recent periods both are scored on")
    rollback_tolerance: float = Field(
        0.10, ge=0, description="roll back when realized WMAE > (1 + this) x the previous's"
    )
    rollback_max_wmae_vs_backtest: float = Field(
        2.0, gt=0, description="...or when realized WMAE > this x the champion's backtest WMAE"
    )
    previous_alias: str = "previous"
    lock_table: str = Field(
        "model_locks", description="warehouse table of the one-retrain-per-model lease"
    )
    lock_lease_seconds: float = Field(
        7200, gt=0, description="a lock older than this is stale (its holder crashed)"
    )


class ServingSection(_Section):
    """The REST API (``salesflow serve``) and the dashboard (``salesflow dashboard``)."""

    host: str = Field("127.0.0.1", description="address the API listens on")
    port: int = Field(8000, ge=1, le=65535, description="API port")
    poll_seconds: float = Field(
        60,
        ge=0,
        description="look up the champion alias this often; load a new champion (0: never)",
    )
    admin_token_env: str = Field(
        "SALESFLOW_ADMIN_TOKEN",
        description="env var holding the bearer token of POST /admin/reload (unset: disabled)",
    )
    page_size: int = Field(500, ge=1, description="GET /forecasts rows per page by default")
    max_page_size: int = Field(5000, ge=1, description="largest page a client may ask for")
    max_predict_series: int = Field(
        1000, ge=1, description="series per POST /predict/batch (more: 413 with the limit)"
    )
    max_body_bytes: int = Field(2_000_000, ge=1, description="largest request body (more: 413)")
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed by CORS; empty: CORS off"
    )
    dashboard_port: int = Field(8501, ge=1, le=65535, description="dashboard port")

    @model_validator(mode="after")
    def _pages(self) -> ServingSection:
        if self.page_size > self.max_page_size:
            raise ValueError(
                f"serving.page_size {self.page_size} exceeds serving.max_page_size "
                f"{self.max_page_size}"
            )
        return self


class PathsSection(_Section):
    local_dir: Path = Field(
        Path("data/local"),
        description="state folder: relative to the project root (inside it), or absolute",
    )

    @field_validator("local_dir")
    @classmethod
    def _inside_project(cls, v: Path) -> Path:
        if not v.is_absolute() and _escapes(v):
            raise ValueError(
                f"paths.local_dir {str(v)!r} leaves the project folder: use a relative path "
                "inside it (e.g. data/local) or an absolute path (e.g. /var/lib/salesflow)"
            )
        return v


def _escapes(path: Path) -> bool:
    """A relative path that climbs out of its base folder once normalised (``a/../..``)."""
    return Path(os.path.normpath(path)).parts[:1] == ("..",)
