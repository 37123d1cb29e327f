"""Shared fixtures: small synthetic data, isolated settings, a temp MLflow + warehouse."""

from __future__ import annotations

import os

import pytest

# XGBoost's OpenMP threads spin while waiting; on a busy 2-core machine that makes fits
# 25x slower. PASSIVE must be set before xgboost loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def small_settings():
    """The test environment's settings (small panel, small model)."""
    from salesflow.config.settings import load_settings

    return load_settings("test")


@pytest.fixture(scope="session")
def small_data(small_settings):
    """A seeded synthetic panel of 3 stores x 4 departments, 120 weeks."""
    from salesflow.data.synthetic import generate_sales

    return generate_sales(small_settings.data.synthetic)


@pytest.fixture()
def isolated_settings(tmp_path, monkeypatch):
    """Test settings whose MLflow registry and warehouse live in ``tmp_path``."""
    from salesflow.config.settings import load_settings

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    return load_settings("test", paths={"local_dir": str(tmp_path / "local")})
