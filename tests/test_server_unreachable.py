"""An MLflow server that does not answer is transient (retried), never "no
champion" (a user error that says to train first)."""

from __future__ import annotations

import socket

import pytest

from salesflow.errors import UserError, is_transient
from salesflow.modelling.registry import RegistryUnavailable, get_alias_version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_raises_registry_unavailable(monkeypatch):
    """A closed port: RegistryUnavailable naming the (redacted) tracking URI, transient."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://ops:s3cret@127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnavailable) as info:
        get_alias_version(uri, "salesflow-forecaster", "champion")
    msg = str(info.value)
    assert "http://ops:***@127.0.0.1:" in msg and "s3cret" not in msg
    assert "salesflow-forecaster@champion" in msg
    assert is_transient(info.value) and not isinstance(info.value, UserError)


def test_missing_model_is_still_none(tmp_path):
    """A reachable registry without the model: None (no champion yet), as before."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert get_alias_version(uri, "salesflow-forecaster", "champion") is None


def _settings(tmp_path, **over):
    from salesflow.config.settings import load_settings

    return load_settings("test", paths={"local_dir": str(tmp_path / "local")}, **over)


def test_flows_preflight_retries_an_mlflow_server_that_does_not_answer(tmp_path):
    """servers_transient (the flows): MLflow down and nothing else wrong is ServerUnreachable
    (transient, naming the URI); the CLI's check keeps it a PreflightError."""
    from salesflow.commands.preflight import PreflightError, ServerUnreachable, check_before_run

    uri = f"http://127.0.0.1:{free_port()}"
    s = _settings(tmp_path, mlflow={"tracking_uri": uri})
    with pytest.raises(ServerUnreachable, match=f"MLflow tracking server {uri} does not answer"):
        check_before_run(s, "forecast", servers_transient=True)
    with pytest.raises(PreflightError, match="does not answer"):
        check_before_run(s, "forecast")


def test_flows_preflight_with_other_problems_stays_a_user_error(tmp_path):
    """MLflow down plus a settings mistake: one PreflightError listing both, not retried."""
    from salesflow.commands.preflight import PreflightError, check_before_run

    uri = f"http://127.0.0.1:{free_port()}"
    s = _settings(tmp_path, mlflow={"tracking_uri": uri}, model={"horizon": 60})
    with pytest.raises(PreflightError, match=r"model\.horizon \(60\).*does not answer"):
        check_before_run(s, "forecast", servers_transient=True)


def test_preflight_task_retries_transient_io_only():
    """The flows' preflight-checks task retries, and only transient failures."""
    from salesflow.errors import retry_transient
    from tasks.preflight import check_run

    assert check_run.retries == 2 and check_run.retry_condition_fn is retry_transient


def test_a_missing_alias_looked_up_while_handling_a_connection_error_is_no_champion(tmp_path):
    """'alias not found' stays None inside an except block for a connection error."""
    from salesflow.modelling.registry import get_alias_version

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        raise ConnectionResetError("registry went away")
    except ConnectionResetError:
        assert get_alias_version(uri, "salesflow-forecaster", "champion") is None
