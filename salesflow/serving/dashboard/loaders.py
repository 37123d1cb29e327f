"""Cached reads for the pages: warehouse and registry reads through
:mod:`salesflow.serving.queries` (kept 30 s), the champion (until the alias moves) and the
history (:class:`salesflow.serving.history.HistoryCache`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import streamlit as st

from salesflow.config.settings import Settings
from salesflow.serving import queries

TTL = 30  # seconds a warehouse read is reused


def cache_key(settings: Settings) -> str:
    """What a cached read depends on besides its arguments: warehouse, registry, model."""
    return f"{settings.warehouse_url}|{settings.tracking_uri}|{settings.model.name}"


@st.cache_data(ttl=TTL, show_spinner=False)
def latest_origin(_settings: Settings, key: str) -> dt.date | None:
    return queries.latest_origin(_settings)


# Keyed by origin: a new forecast origin is a new entry, so the series list can live long.
@st.cache_data(ttl=600, show_spinner="Reading the forecasts ...", max_entries=4)
def all_forecasts(_settings: Settings, key: str, origin: dt.date) -> pd.DataFrame:
    return queries.series_forecast(_settings, {}, origin)


@st.cache_data(ttl=TTL, show_spinner=False)
def series_forecast(
    _settings: Settings, key: str, keys: dict[str, str], origin: dt.date
) -> pd.DataFrame:
    return queries.series_forecast(_settings, keys, origin)


@st.cache_data(ttl=TTL, show_spinner=False)
def store_totals(_settings: Settings, key: str, origin: dt.date) -> pd.DataFrame:
    return queries.store_totals(_settings, origin)


@st.cache_data(ttl=TTL, show_spinner=False)
def realized_accuracy(_settings: Settings, key: str) -> pd.DataFrame:
    return queries.realized_accuracy(_settings)


@st.cache_data(ttl=TTL, show_spinner="Reading the registry ...")
def model_versions(_settings: Settings, key: str) -> list[dict[str, Any]]:
    return queries.model_versions(_settings)


@st.cache_data(ttl=TTL, show_spinner=False)
def audit_events(_settings: Settings, key: str) -> list[dict[str, Any]]:
    return queries.audit_events(_settings)


@st.cache_resource(show_spinner="Loading the sales history ...")
def _history_cache(_settings: Settings, key: str) -> Any:
    from salesflow.serving.history import HistoryCache

    return HistoryCache(_settings)


def history(settings: Settings) -> Any:
    """The sales history (a SalesData) of these settings' data source, cached."""
    return _history_cache(settings, cache_key(settings) + f"|{settings.env}").get()


@st.cache_resource(show_spinner="Loading the champion ...", max_entries=2)
def _champion(_settings: Settings, key: str, version: str) -> Any:
    from salesflow.modelling.registry import load_forecaster

    model, _mv = load_forecaster(
        _settings.tracking_uri, _settings.model.name, _settings.mlflow.champion_alias
    )
    return model


def champion(settings: Settings) -> tuple[Any, str] | None:
    """The champion model and its version (reloaded when the alias moves); None if none."""
    from salesflow.modelling.registry import get_alias_version

    mv = get_alias_version(
        settings.tracking_uri, settings.model.name, settings.mlflow.champion_alias
    )
    if mv is None:
        return None
    return _champion(settings, cache_key(settings), str(mv.version)), str(mv.version)
