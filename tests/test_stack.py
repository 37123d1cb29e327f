"""Guards for the library clashes found in ../shared/STACK-NOTES.md.

Each test fails on the broken combination: fastapi>=0.155 with prefect 3.8 (server app
cannot be built), pandas 3 with evidently 0.7 (import fails). The SQLAlchemy 2.1 clash
(scheduler never creates runs) is caught by the cron test in tests/e2e.
"""

from __future__ import annotations


def test_prefect_server_app_builds():
    """The Prefect server's FastAPI app builds (fastapi>=0.155 raises TypeError here)."""
    from prefect.server.api.server import create_app

    assert create_app(ephemeral=True) is not None


def test_evidently_imports():
    """evidently 0.7 imports with the pinned pandas (pandas 3 breaks it)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    assert Report([DataDriftPreset()]) is not None


def test_sqlalchemy_is_below_2_1():
    """SQLAlchemy 2.1 stops the prefect 3.8 scheduler; the pin keeps 2.0.x."""
    import sqlalchemy

    major, minor = (int(x) for x in sqlalchemy.__version__.split(".")[:2])
    assert (major, minor) < (2, 1)
