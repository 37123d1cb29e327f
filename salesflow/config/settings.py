"""Typed, layered settings: ``configs/base.yaml`` < ``configs/<env>.yaml`` < environment
< explicit arguments.

Environment variables use the prefix ``SALESFLOW_`` and ``__`` between nested keys, e.g.
``SALESFLOW_MODEL__HORIZON=13`` or ``SALESFLOW_WAREHOUSE__URL=postgresql+psycopg://...``.
The env name itself comes from the ``env`` argument, else ``$SALESFLOW_ENV``, else ``dev``.
Nothing here touches the disk except :func:`load_settings` reading the YAML files. The
sections' fields, defaults and checks are in :mod:`salesflow.settings_sections`
(re-exported here); the checks of names, variables and URLs in
:mod:`salesflow.settings_checks`.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from salesflow.config.settings_checks import (
    SettingsError,
    check_env_name,
    check_unknown_variables,
    check_urls,
    known_envs,
)
from salesflow.config.settings_compute import ComputeSection, looks_secret
from salesflow.config.settings_sections import (
    BacktestSection,
    DataSection,
    DriftInjection,
    DriftSection,
    FeaturesSection,
    LongFormatSection,
    MlflowSection,
    ModelSection,
    MonitorSection,
    PathsSection,
    PolicySection,
    ServingSection,
    SyntheticSection,
    ValidationSection,
    WarehouseSection,
)
from salesflow.data.canonical import WALMART_COVARIATES

__all__ = [
    "BacktestSection",
    "DEFAULT_CONFIG_DIR",
    "DataSection",
    "DriftInjection",
    "DriftSection",
    "FeaturesSection",
    "LongFormatSection",
    "MlflowSection",
    "ModelSection",
    "MonitorSection",
    "PROJECT_ROOT",
    "PathsSection",
    "PolicySection",
    "ServingSection",
    "Settings",
    "SettingsError",
    "SyntheticSection",
    "ValidationSection",
    "WarehouseSection",
    "format_validation_error",
    "load_settings",
    "settings_overrides",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "configs"
_yaml_layer: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "yaml_layer", default=None
)


class Settings(BaseSettings):
    """All of salesflow's configuration, one typed section per concern."""

    model_config = SettingsConfigDict(
        env_prefix="SALESFLOW_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    env: str = "dev"
    paths: PathsSection = PathsSection()
    data: DataSection = DataSection()
    validation: ValidationSection = ValidationSection()
    features: FeaturesSection = FeaturesSection()
    model: ModelSection = ModelSection()
    backtest: BacktestSection = BacktestSection()
    mlflow: MlflowSection = MlflowSection()
    warehouse: WarehouseSection = WarehouseSection()
    monitor: MonitorSection = MonitorSection()
    policy: PolicySection = PolicySection()
    serving: ServingSection = ServingSection()
    compute: ComputeSection = ComputeSection()

    @model_validator(mode="after")
    def _frequency_defaults(self) -> Settings:
        """Fill the feature defaults that follow ``data.freq`` (frozen: set in place once);
        ``features.profile_match`` must name numeric covariates of the configured source."""
        object.__setattr__(self, "features", self.features.for_freq(self.data.freq))
        known = (
            self.data.long.covariates
            if self.data.source in ("long", "sql")
            else list(WALMART_COVARIATES)
        )
        unknown = [c for c in self.features.profile_match if c not in known]
        if unknown:
            raise ValueError(
                f"features.profile_match {unknown} are not numeric covariates of the "
                f"{self.data.source} source ({known})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlLayer(settings_cls))

    @property
    def provenance(self) -> dict[str, str]:
        """The env and model name these settings were loaded for (tags, events, audit)."""
        return {"env": self.env, "model_name": self.model.name}

    @property
    def local_dir(self) -> Path:
        p = self.paths.local_dir
        return p if p.is_absolute() else PROJECT_ROOT / p

    @property
    def tracking_uri(self) -> str:
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{self.local_dir / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: a folder under ``paths.local_dir``
        for a local registry; None for an MLflow server (http/https), whose own proxied
        store (``mlflow-artifacts:/``) every host can read, unlike one machine's disk."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.local_dir / "mlartifacts").as_uri()

    @property
    def warehouse_url(self) -> str:
        """The warehouse URL: the env var named by ``warehouse.url_env``, else url, else SQLite."""
        if self.warehouse.url_env and os.environ.get(self.warehouse.url_env):
            return os.environ[self.warehouse.url_env]
        if self.warehouse.url:
            return self.warehouse.url
        return f"sqlite:///{self.local_dir / 'warehouse.db'}"


class _YamlLayer(PydanticBaseSettingsSource):
    """The merged YAML files, below environment variables and explicit arguments."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_yaml_layer.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_layer.get() or {})


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _shown(value: Any) -> Any:
    """``value`` as an error may show it: values under credential-like keys masked."""
    if isinstance(value, dict):
        return {k: "***" if looks_secret(k) else _shown(v) for k, v in value.items()}
    return value


def format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid settings ({origin}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see configs/base.yaml for the valid keys)"
        # A whole-settings check's input is every setting: naming the key says enough.
        got = f" (got {_shown(err.get('input'))!r})" if err["loc"] else ""
        lines.append(f"  - {key}: {msg}{got}")
    return "\n".join(lines)


def load_settings(
    env: str | None = None, config_dir: Path | str | None = None, **overrides: Any
) -> Settings:
    """Load ``base.yaml``, then ``<env>.yaml``, then ``SALESFLOW_*`` variables, then overrides.

    ``env`` (explicit) beats ``$SALESFLOW_ENV``, which beats ``dev``; it is a name, not a
    path, and a named env without a file is an error. ``SALESFLOW_*`` variables that match
    no setting, a missing required warehouse URL variable and an unparsable URL are errors.
    Raises :class:`SettingsError` naming every wrong key or value (redacted).
    """
    cdir = Path(config_dir) if config_dir else DEFAULT_CONFIG_DIR
    env = env or os.environ.get("SALESFLOW_ENV") or "dev"
    check_env_name(env, cdir)
    merged: dict[str, Any] = {}
    base = cdir / "base.yaml"
    if base.exists():
        merged = _read_yaml(base)
    env_file = cdir / f"{env}.yaml"
    if env_file.exists():
        merged = _deep_merge(merged, _read_yaml(env_file))
    elif env != "dev":
        raise SettingsError(f"no config file for env {env!r} in {cdir} (known: {known_envs(cdir)})")
    token = _yaml_layer.set(merged)
    try:
        # ``env`` as an init argument: the highest layer, so $SALESFLOW_ENV (which
        # pydantic-settings would read into the ``env`` field) never outranks it.
        settings = Settings(env=env, **overrides)
    except ValidationError as exc:
        # A misspelt variable may be the cause: name it (with the closest name) first.
        check_unknown_variables(Settings, _url_variables(merged, overrides))
        origin = f"{base.name} < {env_file.name} < SALESFLOW_* env vars < arguments"
        raise SettingsError(format_validation_error(exc, origin)) from None
    finally:
        _yaml_layer.reset(token)
    named = (settings.warehouse.url_env, settings.data.url_env, settings.serving.admin_token_env)
    check_unknown_variables(Settings, named)
    check_urls(settings)
    return settings


def _url_variables(*layers: dict[str, Any]) -> list[str | None]:
    """The variables the ``*.url_env`` and ``serving.admin_token_env`` settings name in the
    YAML files or the overrides (before validation), and their defaults."""
    out: list[str | None] = [
        WarehouseSection.model_fields["url_env"].default,
        ServingSection.model_fields["admin_token_env"].default,
    ]
    for layer in layers:
        for section, key in (
            ("warehouse", "url_env"),
            ("data", "url_env"),
            ("serving", "admin_token_env"),
        ):
            value = layer.get(section)
            if isinstance(value, dict) and isinstance(value.get(key), str):
                out.append(value[key])
    return out


def settings_overrides(
    source: str | None = None,
    path: str | None = None,
    as_of: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword overrides for :func:`load_settings` from flow parameters / CLI options."""
    if "env" in (extra or {}):
        raise SettingsError("env is chosen by --env / the env parameter, not by an override")
    data = {k: v for k, v in {"source": source, "path": path, "as_of": as_of}.items() if v}
    out = dict(extra or {})
    if data:
        out["data"] = {**out.get("data", {}), **data}
    return out
