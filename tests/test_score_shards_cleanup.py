"""A sharded run's commit removes what runs killed before their commit left staged."""

from __future__ import annotations

import datetime as dt
import logging

from salesflow.storage import staging
from salesflow.storage import warehouse as wh
from tasks import score_shards
from tests.test_warehouse import make_forecasts


def test_commit_drops_stale_stages_only(isolated_settings, monkeypatch, caplog) -> None:
    """Rows staged within the cutoff stay; once older than it they are removed."""
    url, table = isolated_settings.warehouse_url, isolated_settings.warehouse.table
    staging.stage_forecasts(url, make_forecasts(), "killed-run", "0", table=table)
    with caplog.at_level(logging.INFO):
        score_shards._drop_stale(isolated_settings, logging.getLogger("t"))
    assert wh.count_rows(url, staging.stage_table(table).name) == 12
    monkeypatch.setattr(score_shards, "STALE_STAGE", dt.timedelta(0))
    with caplog.at_level(logging.INFO):
        score_shards._drop_stale(isolated_settings, logging.getLogger("t"))
    assert wh.count_rows(url, staging.stage_table(table).name) == 0
    assert "Removed 12 staged rows" in caplog.text


def test_cleanup_failure_only_warns(isolated_settings, monkeypatch, caplog) -> None:
    """An error while cleaning up is a warning: the forecasts are already committed."""

    def boom(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(score_shards, "drop_stale_stages", boom)
    with caplog.at_level(logging.WARNING):
        score_shards._drop_stale(isolated_settings, logging.getLogger("t"))
    assert "Could not remove stale staged rows: disk gone" in caplog.text
