"""Alias moves, tags and the audit trail, against a real MLflow registry and warehouse."""

from __future__ import annotations

import argparse
import json
import math
import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from salesflow.commands.cli_lifecycle import add_rollback_command
from salesflow.config.settings import PolicySection
from salesflow.governance import lifecycle as lc
from salesflow.governance.policy import Scorecard
from salesflow.modelling.registry import ChampionNotFound, client, get_alias_version
from tests.pg import PG_URL, drop_table, postgres_or_skip

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

POLICY = PolicySection()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow registry for the module (creating its schema takes ~1 s)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture()
def model(tracking_uri: str, tmp_path: Path) -> str:
    """A registered model with versions 1, 2, 3 (tiny placeholder sources) and no aliases."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    c = client(tracking_uri)
    c.create_registered_model(name)
    for i in range(3):
        source = tmp_path / f"model{i}"
        source.mkdir()
        c.create_model_version(name, source.as_uri())
    return name


def alias(uri: str, name: str, which: str) -> str | None:
    mv = get_alias_version(uri, name, which)
    return None if mv is None else str(mv.version)


def tags(uri: str, name: str, version: str) -> dict[str, str]:
    return client(uri).get_model_version(name, version).tags


def test_promote_moves_champion_and_sets_previous(tracking_uri, model):
    """Each promotion makes the outgoing champion 'previous'; older ones are retired."""
    assert lc.promote(tracking_uri, model, "1", POLICY) == {"from_version": None, "to_version": "1"}
    assert alias(tracking_uri, model, "champion") == "1"
    assert alias(tracking_uri, model, "previous") is None

    assert lc.promote(tracking_uri, model, 2, POLICY) == {"from_version": "1", "to_version": "2"}
    assert (alias(tracking_uri, model, "champion"), alias(tracking_uri, model, "previous")) == (
        "2",
        "1",
    )
    lc.promote(tracking_uri, model, "3", POLICY)
    assert (alias(tracking_uri, model, "champion"), alias(tracking_uri, model, "previous")) == (
        "3",
        "2",
    )
    status = {v: tags(tracking_uri, model, v).get(lc.STATUS) for v in ("1", "2", "3")}
    assert status == {"1": "retired", "2": "previous", "3": "champion"}
    assert tags(tracking_uri, model, "3")[lc.PROMOTED_AT].endswith("+00:00")


def test_promote_of_the_champion_changes_nothing(tracking_uri, model):
    """Promoting the current champion again keeps 'previous' where it was."""
    lc.promote(tracking_uri, model, "1", POLICY)
    lc.promote(tracking_uri, model, "2", POLICY)
    assert lc.promote(tracking_uri, model, "2", POLICY) == {"from_version": "2", "to_version": "2"}
    assert alias(tracking_uri, model, "previous") == "1"


def test_promote_unknown_version_fails(tracking_uri, model):
    """Promoting a version that does not exist raises ValueError naming the versions."""
    with pytest.raises(ValueError, match=r"no version '9' \(versions: 1, 2, 3\)"):
        lc.promote(tracking_uri, model, "9", POLICY)


def test_custom_aliases(tracking_uri, model):
    """The champion alias and policy.previous_alias are configurable, and must differ."""
    policy = PolicySection(previous_alias="before")
    lc.promote(tracking_uri, model, "1", policy, champion_alias="prod")
    lc.promote(tracking_uri, model, "2", policy, champion_alias="prod")
    assert (alias(tracking_uri, model, "prod"), alias(tracking_uri, model, "before")) == ("2", "1")
    with pytest.raises(ValueError, match="must differ"):
        lc.promote(tracking_uri, model, "3", policy, champion_alias="before")


def test_rollback_restores_exactly_the_previous_version(tracking_uri, model):
    """Rollback points the champion at the 'previous' version and removes 'previous'."""
    for v in ("1", "2", "3"):
        lc.promote(tracking_uri, model, v, POLICY)
    moved = lc.rollback(tracking_uri, model, policy=POLICY)
    assert moved == {"from_version": "3", "to_version": "2"}
    assert alias(tracking_uri, model, "champion") == "2"
    assert alias(tracking_uri, model, "previous") is None
    assert client(tracking_uri).get_model_version(model, "3").aliases == []
    assert tags(tracking_uri, model, "3")[lc.STATUS] == "rolled_back"
    assert lc.ROLLED_BACK_AT in tags(tracking_uri, model, "3")
    assert tags(tracking_uri, model, "2")[lc.STATUS] == "champion"
    with pytest.raises(ValueError, match=r"salesflow rollback --to VERSION"):
        lc.rollback(tracking_uri, model, policy=POLICY)  # no flip-flop back to version 3
    assert alias(tracking_uri, model, "champion") == "2"


def test_rollback_to_a_named_version(tracking_uri, model):
    """Rollback --to N makes exactly version N champion; the old 'previous' is retired."""
    for v in ("1", "2", "3"):
        lc.promote(tracking_uri, model, v, POLICY)
    assert lc.rollback(tracking_uri, model, "1", POLICY) == {"from_version": "3", "to_version": "1"}
    assert alias(tracking_uri, model, "champion") == "1"
    assert alias(tracking_uri, model, "previous") is None
    status = {v: tags(tracking_uri, model, v)[lc.STATUS] for v in ("1", "2", "3")}
    assert status == {"1": "champion", "2": "retired", "3": "rolled_back"}


def test_rollback_errors(tracking_uri, model):
    """No champion, no previous, an unknown or the current version: clear errors, no change."""
    with pytest.raises(ChampionNotFound, match="no champion"):
        lc.rollback(tracking_uri, model, policy=POLICY)
    lc.promote(tracking_uri, model, "1", POLICY)
    with pytest.raises(ValueError, match=r"alias 'previous'.*--to VERSION.*versions: 1, 2, 3"):
        lc.rollback(tracking_uri, model, policy=POLICY)
    with pytest.raises(ValueError, match="no version '7'"):
        lc.rollback(tracking_uri, model, "7", POLICY)
    with pytest.raises(ValueError, match="already is the champion"):
        lc.rollback(tracking_uri, model, "1", POLICY)
    assert alias(tracking_uri, model, "champion") == "1"


def test_reject_tags_the_version(tracking_uri, model):
    """Reject tags status and a reason cut to 500 characters; aliases stay."""
    lc.promote(tracking_uri, model, "1", POLICY)
    lc.reject(tracking_uri, model, "2", "too biased " + "x" * 600)
    t = tags(tracking_uri, model, "2")
    assert t[lc.STATUS] == "rejected"
    assert t[lc.REJECT_REASON].startswith("too biased") and len(t[lc.REJECT_REASON]) == 500
    assert alias(tracking_uri, model, "champion") == "1"


def test_audit_rows_and_tags_on_sqlite(tracking_uri, model, tmp_path):
    """Each action writes one row with its fields and tags the versions it affected."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    assert lc.read_audit(url, "model_audit").empty  # no table yet
    card = Scorecard("2", 1_480.0, 2_000.0, 10.0, 15_000.0, 1_000)
    lc.record_audit(
        url,
        "model_audit",
        "promote",
        model,
        "1",
        "2",
        "better",
        {"c": card},
        flow_run_id="run-1",
        actor="retrain-flow",
        tracking_uri=tracking_uri,
    )
    lc.record_audit(
        url,
        "model_audit",
        "reject",
        model,
        "2",
        "3",
        "worse",
        {"wmae": math.nan},
        actor="retrain-flow",
        tracking_uri=tracking_uri,
    )
    lc.record_audit(
        url,
        "model_audit",
        "rollback",
        model,
        "2",
        "1",
        "degraded",
        {},
        actor="monitor-flow",
        tracking_uri=tracking_uri,
    )

    rows = lc.read_audit(url, "model_audit")
    assert list(rows["action"]) == ["promote", "reject", "rollback"]
    assert rows["at"].is_monotonic_increasing and str(rows["at"].dt.tz) == "UTC"
    first = rows.iloc[0]
    assert (first.model_name, first.from_version, first.to_version) == (model, "1", "2")
    assert (first.reason, first.flow_run_id, first.actor) == ("better", "run-1", "retrain-flow")
    assert json.loads(first.metrics)["c"] == {
        "version": "2",
        "wmae": 1480.0,
        "seasonal_naive_wmae": 2000.0,
        "bias": 10.0,
        "mean_abs_actual": 15000.0,
        "n": 1000,
    }
    assert json.loads(rows.iloc[1].metrics) == {"wmae": None}
    assert rows.iloc[1].flow_run_id is None
    assert rows["event_id"].map(lambda e: str(uuid.UUID(e)) == e).all()

    t = {v: tags(tracking_uri, model, v) for v in ("1", "2", "3")}
    assert (t["1"][lc.LAST_ACTION], t["1"][lc.LAST_ACTION_REASON]) == ("rollback", "degraded")
    assert t["2"][lc.LAST_ACTION] == "rollback"  # from_version of the rollback
    assert (t["3"][lc.LAST_ACTION], t["3"][lc.LAST_ACTION_REASON]) == ("reject", "worse")
    assert lc.LAST_ACTION_AT in t["3"]


def test_audit_rejects_unknown_actions(tmp_path):
    """Only promote, reject and rollback are audited."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with pytest.raises(ValueError, match="action must be one of"):
        lc.record_audit(url, "model_audit", "delete", "m", None, None, "?", {})  # type: ignore[arg-type]


def test_cli_rollback(tracking_uri, model, tmp_path, monkeypatch, capsys):
    """`salesflow rollback` moves the alias, prints what it did and writes an audit row."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    monkeypatch.setenv("SALESFLOW_MLFLOW__TRACKING_URI", tracking_uri)
    monkeypatch.setenv("SALESFLOW_MODEL__NAME", model)
    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", url)
    lc.promote(tracking_uri, model, "1", POLICY)
    lc.promote(tracking_uri, model, "2", POLICY)
    parser = argparse.ArgumentParser(prog="salesflow")
    add_rollback_command(parser.add_subparsers(dest="command", required=True))

    args = parser.parse_args(["rollback", "--env", "test", "--reason", "bad week"])
    assert args.func(args) == 0
    assert f"Rolled back {model} champion from version 2 to version 1" in capsys.readouterr().out
    assert alias(tracking_uri, model, "champion") == "1"
    row = lc.read_audit(url, "model_audit").iloc[-1]
    assert (row.action, row.from_version, row.to_version) == ("rollback", "2", "1")
    assert (row.actor, row.reason) == ("cli", "bad week")

    again = parser.parse_args(["rollback", "--env", "test"])
    assert again.func(again) == 1
    assert "--to VERSION" in capsys.readouterr().err
    named = parser.parse_args(["rollback", "--env", "test", "--to", "3"])
    assert named.func(named) == 0
    assert alias(tracking_uri, model, "champion") == "3"
    assert len(lc.read_audit(url, "model_audit")) == 2


def test_cli_rollback_with_the_warehouse_down_moves_nothing(tracking_uri, model, monkeypatch):
    """`salesflow rollback` fails before moving the alias when the warehouse that must
    record it cannot be reached."""
    from salesflow.storage.sqlengine import WarehouseUnavailable

    monkeypatch.setenv("SALESFLOW_MLFLOW__TRACKING_URI", tracking_uri)
    monkeypatch.setenv("SALESFLOW_MODEL__NAME", model)
    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", "postgresql+psycopg://postgres@127.0.0.1:9/x")
    lc.promote(tracking_uri, model, "1", POLICY)
    lc.promote(tracking_uri, model, "2", POLICY)
    parser = argparse.ArgumentParser(prog="salesflow")
    add_rollback_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["rollback", "--env", "test"])
    with pytest.raises(WarehouseUnavailable):
        args.func(args)
    assert alias(tracking_uri, model, "champion") == "2"


@pytest.mark.postgres
def test_audit_on_postgres():
    """Audit rows round-trip on PostgreSQL (table created on first write, ordered by time)."""
    postgres_or_skip()
    table = f"model_audit_t{uuid.uuid4().hex[:12]}"
    try:
        lc.record_audit(PG_URL, table, "promote", "m", None, "1", "no champion yet", {"n": 5})
        lc.record_audit(
            PG_URL,
            table,
            "rollback",
            "m",
            "2",
            "1",
            "degraded",
            {"x": math.inf},
            flow_run_id="fr-1",
            actor="monitor-flow",
        )
        rows = lc.read_audit(PG_URL, table)
        assert list(rows["action"]) == ["promote", "rollback"]
        assert rows.iloc[0].from_version is None and rows.iloc[0].to_version == "1"
        assert json.loads(rows.iloc[1].metrics) == {"x": None}
        assert (rows.iloc[1].flow_run_id, rows.iloc[1].actor) == ("fr-1", "monitor-flow")
        assert str(rows["at"].dt.tz) == "UTC"
        assert len(lc.read_audit(PG_URL, table, model_name="other")) == 0
    finally:
        drop_table(PG_URL, table)


# --- audited promotion: audit first, compare-and-set, retries (salesflow.promotion) ---------


@pytest.fixture()
def promo(tmp_path, monkeypatch):
    """Test settings with a real MLflow registry and SQLite warehouse in ``tmp_path``, and
    three registered versions of the model (no aliases)."""
    from salesflow.config.settings import load_settings

    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL", raising=False)
    s = load_settings("test", paths={"local_dir": str(tmp_path / "local")})
    c = client(s.tracking_uri)
    c.create_registered_model(s.model.name)
    for i in range(3):
        (tmp_path / f"m{i}").mkdir()
        c.create_model_version(s.model.name, (tmp_path / f"m{i}").as_uri())
    return s


def _audit(s):
    return lc.read_audit(s.warehouse_url, s.monitor.audit_table, model_name=s.model.name)


def _champ(s):
    return alias(s.tracking_uri, s.model.name, "champion")


def test_promotion_with_the_warehouse_down_moves_no_alias(promo, monkeypatch):
    """An audit row the warehouse cannot take fails the promotion before the alias moves;
    the retry then promotes once, with one row."""
    from salesflow.governance import promotion
    from salesflow.storage.sqlengine import WarehouseUnavailable

    real, calls = lc.write_frame, []

    def down_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise WarehouseUnavailable("cannot reach the warehouse at sqlite:///x: refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(lc, "write_frame", down_once)
    with pytest.raises(WarehouseUnavailable):
        promotion.promote_audited(promo, "1", None, "first", {}, "run-1", "test")
    assert _champ(promo) is None and _audit(promo).empty
    moved = promotion.promote_audited(promo, "1", None, "first", {}, "run-1", "test")
    assert moved == {"from_version": None, "to_version": "1"} and _champ(promo) == "1"
    assert _audit(promo)[["action", "from_version", "to_version"]].values.tolist() == [
        ["promote", None, "1"]
    ]


def test_failed_alias_move_withdraws_its_audit_row(promo, monkeypatch):
    """If the registry fails the alias move after the row was written, the row is deleted
    (compensating write): registry and audit trail agree."""
    from salesflow.governance import promotion

    def broken(*args, **kwargs):
        raise ConnectionResetError("registry went away")

    monkeypatch.setattr(promotion, "promote", broken)
    with pytest.raises(ConnectionResetError):
        promotion.promote_audited(promo, "1", None, "first", {}, "run-1", "test")
    assert _champ(promo) is None and _audit(promo).empty


def test_promotion_compares_and_sets_the_champion(promo):
    """A promotion compared against version 1 moves nothing once version 2 is champion."""
    from salesflow.governance import promotion

    promotion.promote_audited(promo, "1", None, "first", {}, "run-1", "test")
    promotion.promote_audited(promo, "2", "1", "better", {}, "run-2", "test")
    with pytest.raises(promotion.ChampionChanged, match="it is now version 2"):
        promotion.promote_audited(promo, "3", "1", "compared with 1", {}, "run-3", "test")
    assert _champ(promo) == "2"
    assert _audit(promo)["to_version"].tolist() == ["1", "2"]


def test_retried_promotion_writes_one_row(promo):
    """A retry of the same flow run's promotion (alias already moved) adds no second row
    and reports the original move, never 'promote 2 -> 2'."""
    from salesflow.governance import promotion

    promotion.promote_audited(promo, "1", None, "first", {}, "run-1", "test")
    first = promotion.promote_audited(promo, "2", "1", "better", {}, "run-2", "test")
    again = promotion.promote_audited(promo, "2", "1", "better", {}, "run-2", "test")
    assert first == again == {"from_version": "1", "to_version": "2"}
    assert _audit(promo)[["from_version", "to_version"]].values.tolist() == [
        [None, "1"],
        ["1", "2"],
    ]


def test_retried_rejection_writes_one_row(promo):
    """reject_audited tags the version and writes its row once per flow run."""
    from salesflow.governance import promotion

    for _ in range(2):
        promotion.reject_audited(promo, "3", None, "loses to naive", {}, "run-9", "test")
    assert _audit(promo)["action"].tolist() == ["reject"]
    assert tags(promo.tracking_uri, promo.model.name, "3")[lc.STATUS] == "rejected"


def test_audit_rows_carry_the_env_and_old_tables_gain_the_column(tracking_uri, model, tmp_path):
    """An audit row records the config env of the acting run; a table written before the
    env column existed is migrated (the column added, older rows null)."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE model_audit (event_id TEXT PRIMARY KEY, at TIMESTAMP, action TEXT,"
            " model_name TEXT, from_version TEXT, to_version TEXT, reason TEXT, metrics TEXT,"
            " flow_run_id TEXT, actor TEXT)"
        )
        conn.exec_driver_sql(
            "INSERT INTO model_audit VALUES ('old', '2026-01-01 00:00:00', 'promote', ?, NULL,"
            " '1', 'first', '{}', NULL, 'cli')",
            (model,),
        )
    lc.record_audit(url, "model_audit", "promote", model, "1", "2", "better", {}, env="scenario")
    rows = lc.read_audit(url, "model_audit", model_name=model)
    assert list(rows["env"].fillna("-")) == ["-", "scenario"]
