"""Settings: layering, validation errors naming the key, every YAML in configs/ valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from salesflow.config.settings import DEFAULT_CONFIG_DIR, SettingsError, load_settings
from salesflow.errors import UserError

PG_WITH_PASSWORD = "postgresql+psycopg://salesflow:hunter2@db.example:5432/sales"


@pytest.fixture(autouse=True)
def _no_salesflow_variables(monkeypatch):
    """Each test starts without the caller's SALESFLOW_* settings variables."""
    import os

    for key in [k for k in os.environ if k.upper().startswith("SALESFLOW_")]:
        monkeypatch.delenv(key)


@pytest.mark.parametrize("path", sorted(DEFAULT_CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_loads(path: Path, monkeypatch):
    """Every YAML in configs/ validates against the Settings model."""
    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", PG_WITH_PASSWORD)  # prod requires it
    monkeypatch.setenv("SALESFLOW_MLFLOW__TRACKING_URI", "http://mlflow:5000")  # and this
    env = "dev" if path.stem == "base" else path.stem
    assert load_settings(env).env == env


def test_env_file_overrides_base():
    """configs/test.yaml overrides base.yaml, keeping the keys it does not set."""
    s = load_settings("test")
    assert s.model.horizon == 8
    assert s.model.name == "salesflow-forecaster"


def test_env_var_overrides_yaml(monkeypatch):
    """SALESFLOW_MODEL__HORIZON beats both YAML files."""
    monkeypatch.setenv("SALESFLOW_MODEL__HORIZON", "5")
    assert load_settings("test").model.horizon == 5


def test_overrides_beat_env_vars(monkeypatch):
    """Explicit keyword overrides beat environment variables."""
    monkeypatch.setenv("SALESFLOW_MODEL__HORIZON", "5")
    assert load_settings("test", model={"horizon": 3}).model.horizon == 3


def _write(tmp_path: Path, base: str, env: str | None = None) -> Path:
    (tmp_path / "base.yaml").write_text(base)
    if env is not None:
        (tmp_path / "staging.yaml").write_text(env)
    return tmp_path


@pytest.mark.parametrize(
    ("base", "needle"),
    [
        ("model:\n  horizn: 3\n", "model.horizn: unknown key"),
        ("modle:\n  horizon: 3\n", "modle: unknown key"),
        ("model:\n  horizon: -1\n", "model.horizon"),
        ("model:\n  horizon: many\n", "model.horizon"),
        ("data:\n  source: excel\n", "data.source"),
        ("features:\n  level_shrink: 1.5\n", "features.level_shrink"),
        ("features:\n  denoise_rank: -1\n", "features.denoise_rank"),
        ("warehouse:\n  table: 'drop table x'\n", "not a valid table/schema name"),
        ("data:\n  source: walmart\n", "data.path is required"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, base, needle):
    """A wrong key or value stops loading with a message naming it."""
    with pytest.raises(SettingsError, match=None) as exc:
        load_settings("dev", config_dir=_write(tmp_path, base))
    assert needle in str(exc.value)


def test_unknown_env_is_an_error(tmp_path):
    """Asking for an environment without a YAML file fails and lists the known ones."""
    _write(tmp_path, "{}\n", env="{}\n")
    with pytest.raises(SettingsError, match="no config file for env 'prod'.*staging"):
        load_settings("prod", config_dir=tmp_path)


def test_bad_env_var_names_the_key(monkeypatch):
    """A bad value in an environment variable is reported with its key."""
    monkeypatch.setenv("SALESFLOW_MODEL__HORIZON", "zero")
    with pytest.raises(SettingsError, match="model.horizon"):
        load_settings("test")


def test_defaults_are_embedded(tmp_path):
    """With no URLs configured, MLflow and the warehouse are SQLite files in local_dir."""
    s = load_settings("test", paths={"local_dir": str(tmp_path)})
    assert s.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert s.warehouse_url == f"sqlite:///{tmp_path}/warehouse.db"


def test_explicit_env_beats_salesflow_env(monkeypatch):
    """An explicit env argument outranks $SALESFLOW_ENV: the scenario's env and model."""
    monkeypatch.setenv("SALESFLOW_ENV", "dev")
    s = load_settings("scenario")
    assert s.env == "scenario"
    assert s.provenance == {"env": "scenario", "model_name": "salesflow-scenario"}


def test_salesflow_env_used_without_argument(monkeypatch):
    """Without an env argument, $SALESFLOW_ENV picks the YAML file (and the env name)."""
    monkeypatch.setenv("SALESFLOW_ENV", "scenario")
    assert load_settings().provenance == {"env": "scenario", "model_name": "salesflow-scenario"}


def test_override_beats_env_var_in_same_section(monkeypatch):
    """A keyword override of one key keeps the env var of another key in that section."""
    monkeypatch.setenv("SALESFLOW_MODEL__NAME", "from-env")
    monkeypatch.setenv("SALESFLOW_MODEL__HORIZON", "5")
    s = load_settings("test", model={"horizon": 3})
    assert (s.model.horizon, s.model.name) == (3, "from-env")


def test_env_is_not_an_override():
    """An override named env (e.g. --set '{"env": "prod"}') is refused with the right way."""
    from salesflow.config.settings import settings_overrides

    with pytest.raises(SettingsError, match="env is chosen by --env"):
        load_settings("test", **settings_overrides(extra={"env": "prod"}))


@pytest.mark.parametrize("env", ["../../evil", "../configs/dev", "/etc/passwd", "a b", ".."])
def test_env_must_be_a_name(env, monkeypatch):
    """An env that is a path (argument or $SALESFLOW_ENV) is refused; the known envs listed."""
    for kwargs in ({"env": env}, {}):
        monkeypatch.setenv("SALESFLOW_ENV", env)
        with pytest.raises(SettingsError, match="not an env name.*'dev', 'prod'") as exc:
            load_settings(**kwargs)
        assert isinstance(exc.value, UserError) and isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    "local_dir", ["../..", "../elsewhere", "data/../../x", "data/local/../../.."]
)
def test_local_dir_may_not_leave_the_project(local_dir):
    """A relative paths.local_dir that climbs out of the project folder is refused."""
    with pytest.raises(SettingsError, match="paths.local_dir.*leaves the project folder"):
        load_settings("test", paths={"local_dir": local_dir})


@pytest.mark.parametrize("local_dir", ["data/local", "state/../data/x", "/var/lib/salesflow"])
def test_local_dir_inside_or_absolute(local_dir):
    """Relative paths inside the project and absolute paths (operators' state) are accepted."""
    assert str(load_settings("test", paths={"local_dir": local_dir}).paths.local_dir)


@pytest.mark.parametrize("report_dir", ["/tmp/reports", "../reports", "reports/../../x", ".."])
def test_report_dir_stays_inside_local_dir(report_dir):
    """monitor.report_dir may be neither absolute nor climb out of paths.local_dir."""
    with pytest.raises(SettingsError, match="monitor.report_dir must be a folder inside"):
        load_settings("test", monitor={"report_dir": report_dir})


def test_report_dir_subfolder_is_fine():
    """A nested relative report folder stays under local_dir."""
    assert str(load_settings("test", monitor={"report_dir": "reports/drift"}).monitor.report_dir)


def test_required_warehouse_variable_missing_fails():
    """--env prod without $SALESFLOW_WAREHOUSE_URL fails at load, naming the variable."""
    with pytest.raises(SettingsError, match="SALESFLOW_WAREHOUSE_URL.*not set"):
        load_settings("prod")


def test_required_url_needs_a_variable_name():
    """warehouse.require_url without url_env cannot be satisfied: a settings error."""
    with pytest.raises(SettingsError, match="require_url needs warehouse.url_env"):
        load_settings("test", warehouse={"require_url": True, "url_env": None})


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("not a url", "not a valid database URL"),
        ("postgresql+nosuchdriver://u:hunter2@db/x", "not a valid database URL"),
        ("mysql+pymysql://u:hunter2@db/x", "uses backend 'mysql'"),
        ("postgresql://u:hunter2@db:notaport/x", "not a valid database URL"),
    ],
)
def test_malformed_warehouse_url_fails_at_load(monkeypatch, url, needle):
    """A malformed or unsupported warehouse URL (env var or YAML) fails at load, redacted."""
    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", url)
    with pytest.raises(SettingsError, match=needle) as exc:
        load_settings("prod")
    assert "hunter2" not in str(exc.value) and "SALESFLOW_WAREHOUSE_URL" in str(exc.value)
    monkeypatch.delenv("SALESFLOW_WAREHOUSE_URL")
    with pytest.raises(SettingsError, match=needle) as exc:
        load_settings("test", warehouse={"url": url})
    assert "hunter2" not in str(exc.value) and "warehouse.url" in str(exc.value)


@pytest.mark.parametrize(
    ("var", "suggestion"),
    [
        ("SALESFLOW_MODELL__HORIZON", "SALESFLOW_MODEL__HORIZON"),
        ("SALESFLOW_WAREHOUSE_UR", "SALESFLOW_WAREHOUSE_URL"),
        ("SALESFLOW_MONITOR__DRIFT__TRESHOLD", "SALESFLOW_MONITOR__DRIFT__THRESHOLD"),
        ("SALESFLOW_HORIZON", "SALESFLOW_HORIZON"),
    ],
)
def test_unknown_salesflow_variable_fails(monkeypatch, var, suggestion):
    """A SALESFLOW_* variable that sets nothing (misspelt section or key) fails, naming it and
    the closest valid name."""
    monkeypatch.setenv(var, "13")
    with pytest.raises(SettingsError, match=f"{var}: matches no setting") as exc:
        load_settings("test")
    if suggestion != var:
        assert f"did you mean {suggestion}?" in str(exc.value)


def test_project_variables_are_not_unknown(tmp_path, monkeypatch):
    """SALESFLOW_ENV/HOME/TEST_*, the *.url_env and admin token variables and nested
    settings all pass."""
    (tmp_path / "base.yaml").write_text(
        "data:\n  url_env: SALESFLOW_SALES_DB\nserving:\n  admin_token_env: SALESFLOW_OPS_TOKEN\n"
    )
    for var, value in {
        "SALESFLOW_ENV": "dev",
        "SALESFLOW_HOME": str(tmp_path),
        "SALESFLOW_DEBUG": "1",
        "SALESFLOW_TEST_PG_URL": PG_WITH_PASSWORD,
        "SALESFLOW_WAREHOUSE_URL": PG_WITH_PASSWORD,
        "SALESFLOW_SALES_DB": PG_WITH_PASSWORD,
        "SALESFLOW_OPS_TOKEN": "secret",
        "SALESFLOW_MONITOR__DRIFT__THRESHOLD": "0.01",
        "SALESFLOW_DATA__LONG__KEYS": '["store"]',
    }.items():
        monkeypatch.setenv(var, value)
    s = load_settings(config_dir=tmp_path)
    assert (s.monitor.drift.threshold, s.data.long.key_columns) == (0.01, ["store"])
    assert s.serving.admin_token_env == "SALESFLOW_OPS_TOKEN"
    for var in ("SALESFLOW_OPS_TOKEN", "SALESFLOW_SALES_DB"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("SALESFLOW_ADMIN_TOKEN", "secret")  # the default token's variable
    assert load_settings("test").serving.admin_token_env == "SALESFLOW_ADMIN_TOKEN"


def test_serving_page_size_within_its_maximum():
    """serving.page_size above serving.max_page_size is a settings error naming both."""
    with pytest.raises(SettingsError, match="serving.page_size 600 exceeds serving.max_page_size"):
        load_settings("test", serving={"page_size": 600, "max_page_size": 100})


def test_sql_source_url_checked_at_load(monkeypatch):
    """The SQL source's URL (its variable, else data.url) is required and must parse."""
    sql = {"source": "sql", "table": "sales", "url_env": "SALESFLOW_SALES_DB"}
    with pytest.raises(SettingsError, match="SALESFLOW_SALES_DB .*unset or empty"):
        load_settings("test", data=sql)
    monkeypatch.setenv("SALESFLOW_SALES_DB", "postgresql:/u:hunter2@db")
    with pytest.raises(SettingsError, match=r"\$SALESFLOW_SALES_DB is not a valid") as exc:
        load_settings("test", data=sql)
    assert "hunter2" not in str(exc.value)
    monkeypatch.setenv("SALESFLOW_SALES_DB", "sqlite:///sales.db")
    assert load_settings("test", data=sql).data.url_env == "SALESFLOW_SALES_DB"


def test_settings_error_hides_passwords(tmp_path):
    """A settings error that prints its input (here data.url) hides the password."""
    base = f"data:\n  source: sql\n  url: {PG_WITH_PASSWORD}\n"
    with pytest.raises(SettingsError, match="data.table or data.query is required") as exc:
        load_settings("dev", config_dir=_write(tmp_path, base))
    assert "hunter2" not in str(exc.value)
    assert "salesflow:***@db.example" in str(exc.value)


def test_warehouse_url_from_env(monkeypatch):
    """The warehouse URL (a secret in production) comes from SALESFLOW_WAREHOUSE_URL."""
    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", "postgresql+psycopg://u:pw@db/x")
    monkeypatch.setenv("SALESFLOW_MLFLOW__TRACKING_URI", "http://mlflow:5000")
    assert load_settings("prod").warehouse_url == "postgresql+psycopg://u:pw@db/x"


def test_prod_requires_a_shared_registry(monkeypatch):
    """--env prod with the warehouse set but no MLflow tracking URI fails at load instead of
    registering models in a local SQLite file no worker or API shares."""
    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", "postgresql+psycopg://u:pw@db/x")
    monkeypatch.delenv("SALESFLOW_MLFLOW__TRACKING_URI", raising=False)
    with pytest.raises(SettingsError, match="SALESFLOW_MLFLOW__TRACKING_URI"):
        load_settings("prod")


def test_loading_writes_nothing(tmp_path):
    """Loading settings creates no folder (nothing happens at load/import time)."""
    local = tmp_path / "never"
    load_settings("test", paths={"local_dir": str(local)})
    assert not local.exists()


def test_an_mlflow_server_keeps_artifacts_in_its_own_store(monkeypatch):
    """Local registry: artifacts under paths.local_dir; an http(s) server: its own store."""
    monkeypatch.delenv("SALESFLOW_MLFLOW__TRACKING_URI", raising=False)
    local = load_settings("test")
    assert local.artifact_location and local.artifact_location.startswith("file:")
    remote = load_settings("test", mlflow={"tracking_uri": "http://mlflow:5000"})
    assert remote.artifact_location is None
