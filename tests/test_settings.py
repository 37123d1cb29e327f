"""Settings: layering, validation errors naming the key, every YAML in configs/ valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from salesflow.settings import DEFAULT_CONFIG_DIR, SettingsError, load_settings


@pytest.mark.parametrize("path", sorted(DEFAULT_CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_loads(path: Path):
    """Every YAML in configs/ validates against the Settings model."""
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


def test_warehouse_url_from_env(monkeypatch):
    """The warehouse URL (a secret in production) comes from SALESFLOW_WAREHOUSE_URL."""
    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", "postgresql+psycopg://u:pw@db/x")
    assert load_settings("prod").warehouse_url == "postgresql+psycopg://u:pw@db/x"


def test_loading_writes_nothing(tmp_path):
    """Loading settings creates no folder (nothing happens at load/import time)."""
    local = tmp_path / "never"
    load_settings("test", paths={"local_dir": str(local)})
    assert not local.exists()
