"""``salesflow status``: what a command would use and find, on a temp MLflow registry and
warehouse; "none yet" on empty state; the split audit trail made visible; no password shown."""

from __future__ import annotations

import pandas as pd
import pytest

from salesflow.commands.cli import main
from salesflow.commands.status import gather_status

MODEL = "salesflow-forecaster"


@pytest.fixture()
def local(tmp_path, monkeypatch):
    """The state folder of every env in tmp_path; no warehouse / registry variables set."""
    for var in ("SALESFLOW_WAREHOUSE_URL", "SALESFLOW_MLFLOW__TRACKING_URI", "SALESFLOW_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SALESFLOW_PATHS__LOCAL_DIR", str(tmp_path / "local"))
    return tmp_path / "local"


def _registry(uri: str, n: int = 3) -> None:
    """``n`` real versions of MODEL: v1 rejected, v(n-1) previous, vn champion."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    c.create_registered_model(MODEL)
    for i in range(1, n + 1):
        c.create_model_version(MODEL, source=f"file:///nowhere/{i}", tags={"env": "test"})
    c.set_model_version_tag(MODEL, "1", "salesflow.status", "rejected")
    c.set_registered_model_alias(MODEL, "previous", str(n - 1))
    c.set_registered_model_alias(MODEL, "champion", str(n))


def _forecasts(url: str, origin: str, version: str, n_series: int = 3, horizon: int = 2) -> None:
    from salesflow.storage.forecast_runs import RunContext
    from salesflow.storage.warehouse import write_forecasts

    o = pd.Timestamp(origin)
    rows = [
        {
            "unique_id": f"{s}/1",
            "series_keys": {"store": str(s), "dept": "1"},
            "forecast_origin": o.date(),
            "target_date": (o + pd.Timedelta(weeks=h)).date(),
            "horizon": h + 1,
            "forecast": 100.0 + h,
            "model_name": MODEL,
            "model_version": version,
            "mlflow_run_id": "r",
        }
        for s in range(1, n_series + 1)
        for h in range(horizon)
    ]
    write_forecasts(url, pd.DataFrame(rows), context=RunContext(flow_run_id=f"fr-{version}"))


def _audit(url: str, to_version: str, reason: str = "better") -> None:
    from salesflow.governance.lifecycle import record_audit

    record_audit(url, "model_audit", "promote", MODEL, None, to_version, reason, {})


def test_empty_state_says_none_yet_and_creates_nothing(local):
    """No registry, no warehouse: every fact is 'none yet' and no file or folder appears."""
    st = gather_status("test")
    assert st.versions == [] and "none yet" in st.versions_note
    assert st.last_forecast is None and "none yet" in st.forecast_note
    assert st.audit == [] and "none yet" in st.audit_note
    assert st.warnings == []
    assert not local.exists()


def test_champion_previous_last_forecast_and_audit(local):
    """Versions newest first with their aliases and status tags; the latest origin with its
    rows and series; audit rows newest first."""
    uri, url = f"sqlite:///{local}/mlflow.db", f"sqlite:///{local}/warehouse.db"
    local.mkdir(parents=True)
    _registry(uri)
    _forecasts(url, "2012-01-06", "2")
    _forecasts(url, "2012-01-13", "3", n_series=4, horizon=3)
    _audit(url, "2", "first")
    _audit(url, "3", "second")
    st = gather_status("test")
    assert [v["version"] for v in st.versions] == ["3", "2", "1"]
    assert st.versions[0]["aliases"] == ["champion"] and st.versions[1]["aliases"] == ["previous"]
    assert st.versions[2]["status"] == "rejected"
    f = st.last_forecast
    assert f is not None
    assert (f["origin"], f["rows"], f["series"], f["model_versions"]) == (
        "2012-01-13",
        12,
        4,
        ["3"],
    )
    assert [a["reason"] for a in st.audit] == ["second", "first"]


def test_split_audit_trail_is_warned(local, tmp_path, monkeypatch):
    """Audit rows of the model in the local SQLite warehouse while the configured warehouse
    is another one: a warning names the local file, the counts and the variable."""
    local.mkdir(parents=True)
    _audit(f"sqlite:///{local}/warehouse.db", "1")
    other = f"sqlite:///{tmp_path}/shared.db"
    _audit(other, "2")
    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", other)
    st = gather_status("test")
    assert st.warehouse.origin.startswith("environment variable SALESFLOW_WAREHOUSE_URL")
    assert [a["to_version"] for a in st.audit] == ["2"]
    (warning,) = st.warnings
    assert "split" in warning and str(local / "warehouse.db") in warning
    assert "1 audit row(s)" in warning and "SALESFLOW_WAREHOUSE_URL" in warning


def test_same_warehouse_no_split_warning(local):
    """The local SQLite warehouse is the configured one: nothing is split."""
    local.mkdir(parents=True)
    _audit(f"sqlite:///{local}/warehouse.db", "1")
    assert gather_status("test").warnings == []


def test_env_requiring_warehouse_url_warns_instead_of_failing(local):
    """prod requires SALESFLOW_WAREHOUSE_URL: unset, status still reports, with a warning."""
    st = gather_status("prod")
    assert st.env.value == "prod"
    assert any("SALESFLOW_WAREHOUSE_URL" in w and "not set" in w for w in st.warnings)
    assert any("SALESFLOW_MLFLOW__TRACKING_URI" in w for w in st.warnings)


@pytest.mark.parametrize(
    ("arg", "variable", "origin"),
    [
        ("test", None, "--env"),
        (None, "test", "environment variable SALESFLOW_ENV"),
        (None, None, "default"),
    ],
)
def test_where_the_env_came_from(local, monkeypatch, arg, variable, origin):
    """The env's origin: the argument, then SALESFLOW_ENV, then the default."""
    if variable:
        monkeypatch.setenv("SALESFLOW_ENV", variable)
    st = gather_status(arg)
    assert st.env.origin == origin and st.env.value == (arg or variable or "dev")


def test_cli_hides_passwords_and_reports_unreachable_stores(local, monkeypatch, capsys):
    """`salesflow status` exits 0 with unreachable registry and warehouse, says so, and
    never prints their passwords; the Prefect API line says ephemeral without a server."""
    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", "postgresql+psycopg://u:s3cret@127.0.0.1:9/db")
    monkeypatch.setenv("SALESFLOW_MLFLOW__TRACKING_URI", "http://u:t0ken@127.0.0.1:9")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["status", "--env", "test"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "t0ken" not in out
    assert "postgresql+psycopg://u:***@127.0.0.1:9/db" in out
    assert "warehouse not readable" in out and "registry not readable" in out
    assert "[environment variable SALESFLOW_MLFLOW__TRACKING_URI]" in out
    assert "prefect    ephemeral" in out


def test_cli_names_the_prefect_api_from_the_environment(local, monkeypatch, capsys):
    """With PREFECT_API_URL set, status shows that server and where it came from."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4299/api")
    assert main(["status", "--env", "test"]) == 0
    out = capsys.readouterr().out
    assert "prefect    http://127.0.0.1:4299/api  [environment variable PREFECT_API_URL]" in out


def test_cli_prints_champion_and_last_forecast(local, capsys):
    """The printed status names the champion version and the last origin's rows."""
    local.mkdir(parents=True)
    _registry(f"sqlite:///{local}/mlflow.db", n=2)
    _forecasts(f"sqlite:///{local}/warehouse.db", "2012-01-13", "2")
    assert main(["status", "--env", "test"]) == 0
    out = capsys.readouterr().out
    assert "v2" in out and "champion" in out
    assert "origin 2012-01-13: 6 rows, 3 series, model version 2" in out
    assert "last write: origin 2012-01-13, 6 rows, flow run fr-2" in out
