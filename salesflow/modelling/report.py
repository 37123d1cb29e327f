"""Markdown summaries shown in the Prefect UI and printed by the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from salesflow.data.schema import SalesData


def _fmt(v: float) -> str:
    return f"{v:,.2f}" if abs(v) < 1e6 else f"{v:,.0f}"


def data_summary(data: SalesData) -> str:
    """A few lines on what was ingested."""
    h = data.history
    return (
        f"**Data** `{data.source}`: {len(h):,} rows, {data.n_series:,} series, "
        f"{h['ds'].min().date()} .. {data.last_date.date()} ({data.freq}); "
        f"covariates: {', '.join(data.covariates) or 'none'}; "
        f"future covariate rows: {len(data.future):,}"
    )


_MODEL_NAMES = {"forecast": "salesflow", "seasonal_naive": "seasonal naive", "naive": "naive"}


def model_label(model: str) -> str:
    """Display name of a backtest prediction column (``seasonal_naive_7``: "seasonal naive
    (7)")."""
    if model.startswith("seasonal_naive_"):
        return f"seasonal naive ({model.removeprefix('seasonal_naive_')})"
    return _MODEL_NAMES.get(model, model)


def _ratio(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def metrics_table(overall: pd.DataFrame, by_origin: list[dict[str, Any]] | None = None) -> str:
    """Markdown table of the backtest metrics per model (index: model), RMSPE included;
    with ``by_origin`` (:meth:`BacktestResult.origin_rows`) a second table, one row per
    origin: salesflow and seasonal naive WMAE, their ratio, and both RMSPEs."""
    lines = [
        "| model | WMAE | MAE | RMSE | bias | RMSPE | WMAE / seasonal naive |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, r in overall.iterrows():
        lines.append(
            f"| {model_label(str(model))} | {_fmt(r.wmae)} | {_fmt(r.mae)} | "
            f"{_fmt(r.rmse)} | {_fmt(r.bias)} | {_ratio(r.get('rmspe'))} | "
            f"{r.wmae_vs_seasonal_naive:.3f} |"
        )
    if by_origin:
        lines += ["", origin_table(by_origin)]
    return "\n".join(lines)


def origin_table(by_origin: list[dict[str, Any]]) -> str:
    """Markdown table, one row per backtest origin (rows of
    :meth:`BacktestResult.origin_rows`)."""
    lines = [
        "| origin | salesflow WMAE | seasonal naive WMAE | WMAE / seasonal naive | "
        "salesflow RMSPE | seasonal naive RMSPE | rows |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in by_origin:
        lines.append(
            f"| {r['origin']} | {_fmt_opt(r['forecast_wmae'])} | "
            f"{_fmt_opt(r['seasonal_naive_wmae'])} | {_ratio(r['wmae_vs_seasonal_naive'])} | "
            f"{_ratio(r['forecast_rmspe'])} | {_ratio(r['seasonal_naive_rmspe'])} | "
            f"{r['n']:,} |"
        )
    return "\n".join(lines)


def _fmt_opt(v: float | None) -> str:
    return "n/a" if v is None else _fmt(v)


def training_summary(
    data: SalesData,
    overall: pd.DataFrame,
    origins: list[str],
    model_name: str,
    version: str,
    alias: str | None,
    run_id: str,
    tracking_uri: str,
    by_origin: list[dict[str, Any]] | None = None,
) -> str:
    """The training run's summary: data, backtest metrics vs baselines (pooled, and per
    origin when ``by_origin`` is given), registered version."""
    alias_line = (
        f"alias **`{alias}`** given to this version"
        if alias
        else "the existing champion keeps its alias (promotion is the retraining flow's job)"
    )
    return "\n\n".join(
        [
            "# salesflow training run",
            data_summary(data),
            f"**Backtest**: {len(origins)} origin(s) {', '.join(origins)}; holiday weeks weigh "
            "5 in WMAE; closed days are not scored; RMSPE over rows with sales > 0; accuracy "
            "measured only after each origin.",
            metrics_table(overall, by_origin),
            f"**Registered**: `{model_name}` version **{version}** ({alias_line}); "
            f"MLflow run `{run_id}` in `{_safe_uri(tracking_uri)}`.",
        ]
    )


def _safe_uri(uri: str) -> str:
    """Hide a password in a URI before it is shown anywhere."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:  # not a database URL (file:, http:): nothing secret to hide
        return uri


def version_description(
    params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str]
) -> str:
    """The MLflow model-version description from a training run's record: data window,
    rows and series, backtest WMAE vs seasonal naive, env, trained-until, code version.

    ``params``/``metrics``/``tags`` as logged (:func:`salesflow.training.run_record`):
    missing entries are left out, never invented."""

    def num(key: str, src: dict[str, Any]) -> str | None:
        v = src.get(key)
        try:
            return f"{float(v):,.0f}" if v is not None else None
        except (TypeError, ValueError):
            return str(v)

    parts = [
        f"Trained until {tags.get('trained_until', '?')} (env {tags.get('env', '?')}) on "
        f"{tags.get('data_source', params.get('data_source', '?'))} data "
        f"{params.get('data_start', '?')} .. {params.get('data_end', '?')}: "
        f"{num('n_rows', params) or '?'} rows, {num('n_series', params) or '?'} series."
    ]
    wmae, naive = metrics.get("model_wmae"), metrics.get("seasonal_naive_wmae")
    if wmae is not None and naive:
        origins = [o for o in str(params.get("backtest_origins", "")).split(",") if o]
        parts.append(
            f"Backtest ({len(origins)} origin(s): {', '.join(origins) or '?'}): WMAE "
            f"{wmae:,.1f} = {wmae / naive:.3f} x seasonal naive ({naive:,.1f})."
        )
    if tags.get("code_version"):
        parts.append(
            f"Code {tags['code_version']}; data fingerprint {tags.get('data_fingerprint', '?')}."
        )
    return " ".join(parts)


def feature_table(rows: pd.DataFrame, names: list[str]) -> list[dict]:
    """Per feature: share of missing values, mean and std over the training rows."""
    out = []
    for n in names:
        col = rows[n]
        out.append(
            {
                "feature": n,
                "missing_share": round(float(col.isna().mean()), 4),
                "mean": round(float(col.mean()), 4) if col.notna().any() else None,
                "std": round(float(col.std()), 4) if col.notna().sum() > 1 else None,
            }
        )
    return out


def scoring_summary(identity: dict, notes, result, settings, horizon: int) -> str:
    """The batch forecast's summary: model, origin, rows written, fallbacks used."""
    from salesflow.storage.warehouse import describe_write

    lines = [
        "# salesflow batch forecast",
        f"**Model** `{identity['name']}` version **{identity['version']}** "
        f"(alias `{settings.mlflow.champion_alias}`), MLflow run `{identity['run_id']}` "
        f"in `{_safe_uri(settings.tracking_uri)}`",
        f"**Origin** {notes.origin.date()}, horizon {horizon} periods; "
        f"{notes.n_series_forecast:,} series forecast",
        f"**Warehouse** at `{result.url_redacted}`: {describe_write(result)} "
        f"in {result.seconds:.2f} s (run recorded in `{settings.warehouse.runs_table}`)",
        "",
        "| fallback | count | what happened |",
        "| --- | ---: | --- |",
        f"| series without history | {len(notes.skipped_no_history)} | skipped (nothing to "
        "forecast from) |",
        f"| series not seen in training | {len(notes.unseen_series)} | forecast from their own "
        "history by the global model |",
        f"| target rows missing covariates | {notes.covariate_rows_filled} | filled with the "
        f"series' last known value ({', '.join(notes.covariate_columns_filled) or '-'}) |",
    ]
    return "\n".join(lines)


def decision_markdown(decision, model_name: str, moved: dict) -> str:
    """The retraining decision: both scorecards on the same holdout, the action, the reason."""
    rows = [("challenger", decision.challenger)]
    if decision.champion is not None:
        rows.append(("champion", decision.champion))
    lines = [
        f"# {decision.action.upper()}: {model_name} version {decision.challenger.version}",
        f"**Reason**: {decision.reason}",
        "",
        "| model | version | WMAE | seasonal naive WMAE | bias | rows |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, c in rows:
        lines.append(
            f"| {label} | {c.version} | {_fmt(c.wmae)} | {_fmt(c.seasonal_naive_wmae)} | "
            f"{_fmt(c.bias)} | {c.n:,} |"
        )
    if moved.get("to_version"):
        lines.append(
            f"\nAlias `champion` moved from version {moved.get('from_version') or '-'} "
            f"to version {moved['to_version']}."
        )
    return "\n".join(lines)


def report_links(paths: dict[str, Path]) -> str:
    """Markdown links to a run's HTML reports (kind -> path), each also shown as its path."""
    lines = ["**HTML reports of this run** (Evidently; open in a browser):"]
    for kind, path in paths.items():
        p = Path(path).resolve()
        lines.append(f"- [{kind} drift]({p.as_uri()}): `{p}`")
    return "\n".join(lines)


def monitor_summary(identity, cmp, drift, degraded, events, decision) -> str:
    """The monitor run: realized accuracy vs the champion's backtest, drift, what was done."""
    bt = identity.get("backtest_wmae")
    cur = "n/a" if cmp.current_wmae is None else _fmt(cmp.current_wmae)
    prev = "n/a" if cmp.previous_wmae is None else _fmt(cmp.previous_wmae)
    lines = [
        f"# Monitoring {identity['name']} version {identity['version']}",
        "| figure | value |",
        "| --- | ---: |",
        f"| realized WMAE ({cmp.window_start} .. {cmp.window_end}, {cmp.n_rows:,} rows) | {cur} |",
        f"| backtest WMAE at training | {_fmt(bt) if bt else 'n/a'} |",
        f"| previous champion ({cmp.previous_version or '-'}) on the same rows | {prev} |",
        f"| performance degraded | {'yes' if degraded else 'no'} |",
    ]
    for kind, r in drift.items():
        # What moved, in business terms where the check measured it, else the column names.
        moved = [
            r.shifts[c.column].describe() if c.column in r.shifts else c.column
            for c in r.columns
            if c.drifted
        ]
        lines.append(
            f"| {kind} drift | {'DRIFT' if r.detected else 'no'} ({'; '.join(moved) or '-'}) |"
        )
    lines += [
        "",
        f"**Events emitted**: {', '.join(events) or 'none'}",
        f"**Rollback**: {'yes' if decision.rollback else 'no'} — {decision.reason}",
    ]
    return "\n".join(lines)
