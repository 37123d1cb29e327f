"""The batch forecast flow: champion + latest data -> forecasts in the warehouse table."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.run_names import run_name
from flows.score_partitions import score_partitions_on_dask
from flows.score_shards import score_on_dask
from salesflow.compute.cluster import ingests_on_workers, require_prefect_server
from salesflow.config.settings import Settings, load_settings, settings_overrides
from salesflow.modelling.model import GlobalForecaster
from salesflow.modelling.report import scoring_summary
from salesflow.modelling.scoring import ScoringNotes, rows_per_store
from salesflow.storage.warehouse import WriteResult, describe_write
from tasks.ingest import ingest_sales
from tasks.preflight import check_data, check_run
from tasks.score import forecast_series, load_champion, write_to_warehouse
from tasks.validate import validate_data


@flow(name="batch-forecast", flow_run_name=run_name("batch-forecast"), log_prints=True)
def batch_forecast_flow(
    env: str | None = None,
    source: str | None = None,
    path: str | None = None,
    as_of: str | None = None,
    origin: str | None = None,
    overrides: dict[str, Any] | None = None,
    replace_origin: bool = False,
) -> dict[str, Any]:
    """Forecast every series with the champion and upsert the rows into the warehouse.

    ``as_of`` cuts the data (default: all of it); ``origin`` is the first forecast period
    (default: the period after the last observation). Series of that origin already in
    the warehouse but absent from this run (a partial extract) keep their rows unless
    ``replace_origin``; the result says what was added, replaced, removed and kept.
    With ``compute.engine: dask`` the data is read, validated and scored per partition and
    shard on the Dask cluster (the ``score-partitions`` subflow; ``compute.ingest: driver``:
    read and validated here, scored by the ``score-shards`` subflow), rows staged and
    committed once.
    """
    settings = load_settings(env, **settings_overrides(source, path, as_of, overrides))
    require_prefect_server(settings.compute)
    check_run(settings, "forecast")
    model, identity = load_champion(settings)
    if ingests_on_workers(settings.compute):
        per_store, notes, result = score_partitions_on_dask(
            model, identity, settings, origin, replace_origin
        )
    else:
        per_store, notes, result = _ingest_and_score(
            model, identity, settings, origin, replace_origin
        )
    create_table_artifact(
        key="forecast-rows-per-store", table=per_store, description="Rows written per store"
    )
    create_markdown_artifact(
        key="batch-forecast-summary",
        markdown=scoring_summary(identity, notes, result, settings, model.horizon),
        description="Batch forecast: model, horizon, rows written, fallbacks used",
    )
    return {
        "model_name": identity["name"],
        "model_version": identity["version"],
        "origin": str(notes.origin.date()),
        "rows_written": result.rows_written,
        "rows_added": result.rows_inserted,
        "rows_replaced": result.rows_updated,
        "rows_removed": result.rows_deleted,
        "series": notes.n_series_forecast,
        "series_removed": sorted(result.removed),
        "series_kept": sorted(result.kept),
        "table": result.table,
        "write_summary": describe_write(result),
    }


def _ingest_and_score(
    model: GlobalForecaster,
    identity: dict[str, Any],
    settings: Settings,
    origin: str | None,
    replace_origin: bool,
) -> tuple[list[dict], ScoringNotes, WriteResult]:
    """The whole panel read and validated in this process, then scored here or on Dask
    (``compute.ingest: driver``)."""
    data = ingest_sales(settings.data)
    data = validate_data(data, settings.validation, settings.data.as_of, model.horizon)
    check_data(settings, data, "forecast", model, identity["version"])
    if settings.compute.engine == "dask":
        return score_on_dask(model, identity, data, settings, origin, replace_origin)
    rows, notes = forecast_series(model, identity, data, origin)
    w = settings.warehouse
    write = write_to_warehouse.with_options(
        retries=w.retries, retry_delay_seconds=w.retry_delay_seconds
    )
    result = write(rows, settings, notes, replace_origin)
    return rows_per_store(rows), notes, result


if __name__ == "__main__":
    batch_forecast_flow()
