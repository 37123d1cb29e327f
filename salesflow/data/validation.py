"""The validation gate: Great Expectations checks on :class:`SalesData` before anything learns.

``validate_sales`` runs one GX suite on ``history`` (and one on ``future`` when it has rows)
and returns a :class:`ValidationReport`; ``check_sales`` raises :class:`DataValidationError`
when a check fails. Rules GX has no expectation for (regular frequency, minimum history,
future after history) become helper columns on a copy of the frame, computed with pandas,
that a GX expectation then checks, so every rule reports its offending rows the same way.
Great Expectations is imported inside the functions: its import takes ~2-3 s.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_datetime64_dtype, is_numeric_dtype

from features.calendar import period_step
from salesflow.config.settings import ValidationSection
from salesflow.data.schema import DATE, HOLIDAY, ID, TARGET, SalesData
from salesflow.data.validation_report import CheckResult, DataValidationError, ValidationReport

_DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]
_NUMERIC_TYPES = [
    *("float64", "float32", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16"),
    *("Float64Dtype", "Float32Dtype", "Int64Dtype", "Int32Dtype", "Int16Dtype", "Int8Dtype"),
]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_STEP, _WEEKDAY, _N_OBS, _AHEAD = "_sf_step_days", "_sf_weekday", "_sf_n_obs", "_sf_days_ahead"
MAX_FUTURE_PERIODS = 520  # the longest horizon the settings allow (model.horizon)


@dataclass
class _Check:
    """A planned check: the report's name and column, and the GX expectation behind it."""

    name: str
    column: str | None
    expectation: Any
    unit: str = "rows"


def validate_sales(
    data: SalesData,
    cfg: ValidationSection,
    as_of: date | None = None,
    horizon: int | None = None,
) -> ValidationReport:
    """Run the gate on ``data.history`` (and ``data.future`` when not empty); never raises.

    History needs ``unique_id``, the key columns, ``ds`` (datetime), ``y`` (numeric),
    ``is_holiday``, the declared covariates and static columns; see the module docstring.
    No history date may be after ``cfg.today`` (default: the current UTC date); future
    covariates may reach ``cfg.max_future_periods`` (default: ``horizon``, else
    :data:`MAX_FUTURE_PERIODS`) periods after it.
    """
    today = run_today(cfg)
    history, checks, skipped = _plan_history(data, cfg, as_of, today)
    short: list[str] = []
    if _N_OBS in history:
        short = history.loc[history[_N_OBS] < cfg.min_history, ID].astype(str).tolist()
    suites = [("history", history, checks)]
    if len(data.future):
        periods = cfg.max_future_periods or horizon or MAX_FUTURE_PERIODS
        future, f_checks, f_skipped = _plan_future(data, today, periods)
        suites.append(("future", future, f_checks))
        skipped += f_skipped
    results = _run_suites(suites, cfg.sample_rows)
    n_series = int(data.history[ID].nunique()) if ID in data.history else 0
    return ValidationReport(
        passed=all(r.success for r in results),
        checks=results,
        n_rows=len(data.history),
        n_series=n_series,
        skipped=skipped,
        short_series=short,
    )


def check_sales(
    data: SalesData,
    cfg: ValidationSection,
    as_of: date | None = None,
    horizon: int | None = None,
) -> ValidationReport:
    """Like :func:`validate_sales`, but raise :class:`DataValidationError` unless it passed."""
    report = validate_sales(data, cfg, as_of, horizon)
    if not report.passed:
        raise DataValidationError(report)
    return report


def drop_short_series(data: SalesData, report: ValidationReport) -> SalesData:
    """``data`` without the series the report found shorter than ``min_history``.

    The gate tolerates up to ``max_short_series_share`` of such series; the caller drops
    them (and logs ``report.short_series``) before building features.
    """
    return drop_series(data, report.short_series)


def drop_series(data: SalesData, ids: list[str]) -> SalesData:
    """``data`` without the series ``ids`` (history and future rows)."""
    short = set(ids)

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        if not short or ID not in frame:
            return frame
        return frame[~frame[ID].astype(str).isin(short)].reset_index(drop=True)

    return replace(data, history=keep(data.history), future=keep(data.future))


def run_today(cfg: ValidationSection) -> date:
    """The run's 'today': ``cfg.today``, else the current date in UTC."""
    return cfg.today or dt.datetime.now(dt.UTC).date()


def _plan_history(
    data: SalesData, cfg: ValidationSection, as_of: date | None, today: date
) -> tuple[pd.DataFrame, list[_Check], list[str]]:
    """The history frame with helper columns, the checks to run on it, and what was skipped."""
    df = data.history.reset_index(drop=True)
    checks, skipped = _plan_columns(df, data, cfg)
    checks += _plan_series(df, data.freq, cfg, as_of, skipped)
    if DATE in df and _is_datetime(df[DATE]):
        checks.append(_not_after(f"no dates after today {today:%Y-%m-%d}", today))
    # A consolidated copy: GX copies and filters the frame per metric, and pandas would
    # re-merge the helper columns' blocks on every one of those copies.
    return df.copy(), checks, skipped


def _plan_columns(
    df: pd.DataFrame, data: SalesData, cfg: ValidationSection
) -> tuple[list[_Check], list[str]]:
    """Row-wise checks on the data's own columns: presence, types, nulls, uniqueness, ranges."""
    import great_expectations.expectations as gxe

    required = list(dict.fromkeys([ID, *data.keys, DATE, TARGET, HOLIDAY]))
    declared = [*data.covariates, *data.categorical, *data.static]
    required += [c for c in dict.fromkeys(declared) if c not in required]
    checks = [_Check("history not empty", None, gxe.ExpectTableRowCountToBeBetween(min_value=1))]
    checks += [_Check("column present", c, gxe.ExpectColumnToExist(column=c)) for c in required]
    skipped = [f"checks on missing column {c!r}" for c in required if c not in df]
    has = set(df.columns)
    if DATE in has:
        dtype = gxe.ExpectColumnValuesToBeInTypeList(column=DATE, type_list=_DATETIME_TYPES)
        checks.append(_Check("datetime type", DATE, dtype))
    for c in [c for c in dict.fromkeys([TARGET, *data.covariates, *cfg.ranges]) if c in has]:
        dtype = gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=_NUMERIC_TYPES)
        checks.append(_Check("numeric type", c, dtype))
    for c in [c for c in dict.fromkeys([ID, *data.keys, DATE, TARGET]) if c in has]:
        checks.append(_Check("not null", c, gxe.ExpectColumnValuesToNotBeNull(column=c)))
    if {ID, DATE} <= has:
        unique = gxe.ExpectCompoundColumnsToBeUnique(column_list=[ID, DATE])
        checks.append(_Check("unique (series, date)", f"{ID}, {DATE}", unique))
    # Nulls pass range checks: covariates such as markdowns are legitimately missing.
    for c, (lo, hi) in {TARGET: (cfg.target_min, cfg.target_max), **cfg.ranges}.items():
        if c in has and _is_numeric(df[c]):
            between = gxe.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi)
            checks.append(_Check(f"in range [{lo:g}, {hi:g}]", c, between))
    return checks, skipped


def _plan_series(
    df: pd.DataFrame, freq: str, cfg: ValidationSection, as_of: date | None, skipped: list[str]
) -> list[_Check]:
    """Per-series checks on helper columns added to ``df``: history length, calendar, as-of."""
    import great_expectations.expectations as gxe

    checks: list[_Check] = []
    if ID not in df:
        return checks
    df[_N_OBS] = _first_row_counts(df)
    # mostly: up to max_short_series_share of the series may be short (they get dropped).
    enough = gxe.ExpectColumnValuesToBeBetween(
        column=_N_OBS, min_value=cfg.min_history, mostly=1.0 - cfg.max_short_series_share
    )
    checks.append(_Check(f"minimum history (>= {cfg.min_history} obs)", ID, enough, "series"))
    if DATE not in df:
        return checks
    if not _is_datetime(df[DATE]):
        skipped.append(f"frequency and as-of checks: {DATE!r} is not a tz-naive datetime")
        return checks
    checks += _plan_calendar(df, freq, cfg.max_gap_share)
    if as_of is not None:
        cut = pd.Timestamp(as_of)
        late = gxe.ExpectColumnValuesToBeBetween(column=DATE, max_value=cut)
        checks.append(_Check(f"no dates after as-of {cut:%Y-%m-%d}", DATE, late))
    return checks


def _plan_calendar(df: pd.DataFrame, freq: str, max_gap_share: float) -> list[_Check]:
    """Add step and weekday helper columns to ``df``; return the frequency checks on them."""
    import great_expectations.expectations as gxe

    days = _period_days(freq)
    df[_STEP] = _step_days(df)
    # mostly: real series have a few gaps (missing periods); max_gap_share of rows may follow one.
    step = gxe.ExpectColumnValuesToBeInSet(
        column=_STEP, value_set=[days], mostly=1.0 - max_gap_share
    )
    checks = [_Check(f"regular frequency ({freq} = {days:g} days)", DATE, step)]
    anchor = _anchor_day(freq)
    if anchor is not None:
        # Categorical: cheap to build and copy; NaT dates give NaN, which GX skips.
        codes = df[DATE].dt.dayofweek.fillna(-1).astype(int).to_numpy()
        df[_WEEKDAY] = pd.Categorical.from_codes(codes, categories=_WEEKDAYS)
        on_day = gxe.ExpectColumnValuesToBeInSet(column=_WEEKDAY, value_set=[anchor])
        checks.append(_Check(f"dates on {freq} anchor ({anchor})", DATE, on_day))
    return checks


def _not_after(name: str, last: date | pd.Timestamp) -> _Check:
    """A check that no ``ds`` is after ``last``."""
    import great_expectations.expectations as gxe

    cut = gxe.ExpectColumnValuesToBeBetween(column=DATE, max_value=pd.Timestamp(last))
    return _Check(name, DATE, cut)


def _plan_future(
    data: SalesData, today: date, periods: int
) -> tuple[pd.DataFrame, list[_Check], list[str]]:
    """The future frame with a days-after-history helper column, and its checks."""
    import great_expectations.expectations as gxe

    df = data.future.reset_index(drop=True)
    checks = [
        _Check("future: column present", c, gxe.ExpectColumnToExist(column=c)) for c in (ID, DATE)
    ]
    if not {ID, DATE} <= set(df.columns):
        return df, checks, [f"future checks: future lacks {ID!r} or {DATE!r}"]
    type_check = gxe.ExpectColumnValuesToBeInTypeList(column=DATE, type_list=_DATETIME_TYPES)
    checks.append(_Check("future: datetime type", DATE, type_check))
    if _is_datetime(df[DATE]):
        # Covariates are known ahead, but not beyond what any forecast could use.
        bound = pd.Timestamp(today) + period_step(data.freq) * periods
        name = f"future: no dates after today + {periods} periods ({bound:%Y-%m-%d})"
        checks.append(_not_after(name, bound))
    unique = gxe.ExpectCompoundColumnsToBeUnique(column_list=[ID, DATE])
    checks.append(_Check("future: unique (series, date)", f"{ID}, {DATE}", unique))
    hist = data.history
    if not ({ID, DATE} <= set(hist) and _is_datetime(hist[DATE]) and _is_datetime(df[DATE])):
        return df, checks, ["future after history: dates are not datetime in history or future"]
    last = hist.groupby(ID)[DATE].max()
    df[_AHEAD] = (df[DATE] - df[ID].map(last)) / pd.Timedelta(days=1)
    after = gxe.ExpectColumnValuesToBeBetween(column=_AHEAD, min_value=0, strict_min=True)
    checks.append(_Check("future: after history's last date", DATE, after))
    return df, checks, []


def _run_suites(
    suites: list[tuple[str, pd.DataFrame, list[_Check]]], sample_rows: int
) -> list[CheckResult]:
    """Run one GX suite per frame in a fresh ephemeral context; results in planning order."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # read when the context is built
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        # No data docs site: the report is published as a Prefect artifact instead.
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("salesflow")
    out: list[CheckResult] = []
    for name, frame, checks in suites:
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        for i, check in enumerate(checks):
            check.expectation.meta = {"salesflow_check": i}
        # One suite with all expectations: add_expectation re-serialises the suite each time.
        expectations = [c.expectation for c in checks]
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        definition = gx.ValidationDefinition(name=name, data=batch, suite=suite)
        run = context.validation_definitions.add(definition).run(
            batch_parameters={"dataframe": frame},
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": sample_rows,
                "unexpected_index_column_names": [c for c in (ID, DATE) if c in frame],
                "return_unexpected_index_query": False,
            },
        )
        # GX reorders results (by domain); the meta tag maps them back to the plan.
        by_index = {_meta(r)["salesflow_check"]: r for r in run.results}
        out += [_to_result(c, by_index[i], frame) for i, c in enumerate(checks)]
    return out


def _to_result(check: _Check, res: Any, frame: pd.DataFrame) -> CheckResult:
    """Turn one GX ``ExpectationValidationResult`` into a :class:`CheckResult`."""
    info = res.result or {}
    config = res.expectation_config
    gx_column = config.kwargs.get("column")
    error = _exception_message(res.exception_info)
    out = CheckResult(check.name, config.type, check.column, bool(res.success), unit=check.unit)
    if "unexpected_count" in info:
        out.unexpected_count = int(info["unexpected_count"])
        out.unexpected_percent = float(info.get("unexpected_percent") or 0.0)
        if "element_count" in info:
            out.checked = int(info["element_count"]) - int(info.get("missing_count") or 0)
        out.mostly = config.kwargs.get("mostly")
        rows = info.get("partial_unexpected_index_list") or []
        out.sample = [_sample_row(r, gx_column) for r in rows] if not out.success else []
    elif error:
        out.observed = f"error: {error}"
    elif config.type == "expect_column_to_exist":
        out.observed = "present" if out.success else "missing"
    elif config.type == "expect_table_row_count_to_be_between":
        out.observed = f"{info.get('observed_value')} rows"
    elif gx_column in frame:
        out.observed = f"dtype {frame[gx_column].dtype}"
    return out


def _meta(res: Any) -> dict[str, Any]:
    config = res.expectation_config
    return dict(config.meta or {}) if config is not None else {}


def _sample_row(row: Any, gx_column: str | None) -> dict[str, Any]:
    """One offending row as ``{unique_id, ds, value}`` (value absent for compound checks)."""
    if not isinstance(row, dict):
        return {"row": row}
    out = {k: row[k] for k in (ID, DATE) if k in row}
    if gx_column is not None and gx_column in row and gx_column not in out:
        out["value"] = row[gx_column]
    return out


def _exception_message(info: Any) -> str | None:
    """The first exception message in a GX ``exception_info`` (flat or keyed by metric)."""
    if not isinstance(info, dict):
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    for e in entries:
        if isinstance(e, dict) and e.get("raised_exception"):
            return str(e.get("exception_message"))
    return None


def _first_row_counts(df: pd.DataFrame) -> pd.Series:
    """Rows per series on each series' first row, NaN elsewhere (GX ignores nulls)."""
    codes, _ = pd.factorize(df[ID])  # null ids get code -1
    counts = np.bincount(codes[codes >= 0]) if len(codes) else np.zeros(0, dtype=np.int64)
    first = ~pd.Series(codes).duplicated().to_numpy() & (codes >= 0)
    return pd.Series(np.where(first, counts[np.maximum(codes, 0)] if len(codes) else 0, np.nan))


def _step_days(df: pd.DataFrame) -> pd.Series:
    """Days since the series' previous date; NaN on first rows and repeated dates."""
    ordered = df[[ID, DATE]].sort_values([ID, DATE], kind="stable")
    same = ordered[ID].eq(ordered[ID].shift())
    step = ordered[DATE].diff().where(same) / pd.Timedelta(days=1)
    return step.where(step != 0).reindex(df.index)


def _period_days(freq: str) -> float:
    """Length of one period in days: ``W-*`` is 7, ``D`` is 1; fixed offsets by their length."""
    if freq.upper().startswith("W"):
        return 7.0
    try:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(freq)) / pd.Timedelta(days=1)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unsupported frequency {freq!r}: use 'D' or 'W-<DAY>'") from exc


def _anchor_day(freq: str) -> str | None:
    """The weekday name of a weekly frequency's anchor (``W-FRI`` -> Friday), else None."""
    parts = freq.upper().split("-")
    if parts[0] != "W":
        return None
    day = parts[1] if len(parts) > 1 else "SUN"
    return next((d for d in _WEEKDAYS if d[:3].upper() == day), None)


def _is_numeric(s: pd.Series) -> bool:
    return is_numeric_dtype(s.dtype) and not is_bool_dtype(s.dtype)


def _is_datetime(s: pd.Series) -> bool:
    return is_datetime64_dtype(s.dtype)
