"""Checks :mod:`salesflow.settings` runs while loading: the env name, the ``SALESFLOW_*``
variables of the process, and the URLs the settings resolve to.

Each check raises :class:`SettingsError` (a :class:`~salesflow.errors.UserError`, so its
message is redacted and the CLI prints it as one line with exit code 2).
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from salesflow.errors import UserError

if TYPE_CHECKING:
    from salesflow.config.settings import Settings

__all__ = [
    "ENV_PREFIX",
    "PROJECT_VARIABLES",
    "SettingsError",
    "check_env_name",
    "check_unknown_variables",
    "check_urls",
    "known_envs",
]

ENV_PREFIX = "SALESFLOW_"
# Variables of the project that are not settings: the env name, the checkout the flow runs
# change to (deployments/prefect.yaml), the default warehouse URL variable, the CLI's
# tracebacks switch (salesflow/commands/cli_errors.py). SALESFLOW_TEST_* are the test suite's
# (PostgreSQL URL of the tests, SQL source fixtures).
PROJECT_VARIABLES = frozenset(
    {"SALESFLOW_ENV", "SALESFLOW_HOME", "SALESFLOW_WAREHOUSE_URL", "SALESFLOW_DEBUG"}
)
_TEST_PREFIX = "SALESFLOW_TEST_"
_ENV_NAME = re.compile(r"[A-Za-z0-9_-]+")


class SettingsError(UserError, ValueError):
    """The configuration is invalid; the message names the key and the problem."""


def known_envs(config_dir: Path) -> list[str]:
    """The env names that have a ``<env>.yaml`` in ``config_dir`` (``base`` excluded)."""
    return sorted(p.stem for p in config_dir.glob("*.yaml") if p.stem != "base")


def check_env_name(env: str, config_dir: Path) -> None:
    """An env is a name (letters, digits, ``_``, ``-``), never a path."""
    if not _ENV_NAME.fullmatch(env):
        raise SettingsError(
            f"env {env!r} is not an env name: use one of {known_envs(config_dir)} "
            f"(configs/<env>.yaml; letters, digits, '_' and '-' only)"
        )


# --- SALESFLOW_* variables that match no setting ------------------------------------------


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``Section``, ``Section | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _is_mapping(annotation: Any) -> bool:
    candidates = [annotation, *typing.get_args(annotation)]
    return any(typing.get_origin(a) is dict or a is dict for a in candidates)


def _field_names(model: type[BaseModel]) -> Iterator[tuple[str, Any]]:
    for name, info in model.model_fields.items():
        yield name, info.annotation
        if isinstance(info.validation_alias, str):
            yield info.validation_alias, info.annotation


def _is_setting(model: type[BaseModel], parts: list[str]) -> bool:
    """True when ``parts`` (lower case) name a field, a section or a key of a mapping."""
    fields = {name.lower(): ann for name, ann in _field_names(model)}
    if not parts or parts[0] not in fields:
        return False
    ann, rest = fields[parts[0]], parts[1:]
    if not rest:
        return True
    sub = _model_of(ann)
    if sub is not None:
        return _is_setting(sub, rest)
    return _is_mapping(ann)


def _variable_names(model: type[BaseModel], prefix: str = ENV_PREFIX) -> Iterator[str]:
    """Every section and field of ``model`` as an environment variable name."""
    for name, ann in _field_names(model):
        var = f"{prefix}{name.upper()}"
        yield var
        sub = _model_of(ann)
        if sub is not None:
            yield from _variable_names(sub, f"{var}__")


def check_unknown_variables(
    settings_cls: type[BaseModel],
    url_variables: Iterable[str | None],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Fail on ``SALESFLOW_*`` variables that set nothing: a misspelt section or key would
    otherwise be ignored. The project's own variables and ``url_variables`` (the names the
    ``*.url_env`` settings give) pass."""
    environ = os.environ if environ is None else environ
    allowed = PROJECT_VARIABLES | {v.upper() for v in url_variables if v}
    valid = sorted(set(_variable_names(settings_cls)) | allowed)
    problems = []
    for var in sorted(environ):
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in allowed:
            continue
        if upper.startswith(_TEST_PREFIX):
            continue
        parts = upper[len(ENV_PREFIX) :].lower().split("__")
        if _is_setting(settings_cls, parts):
            continue
        close = difflib.get_close_matches(upper, valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        problems.append(f"  - {var}: matches no setting{hint}")
    if problems:
        raise SettingsError(
            "unknown SALESFLOW_* environment variable(s) (unset or rename them; names are "
            "SALESFLOW_<SECTION>__<KEY>, see configs/base.yaml):\n" + "\n".join(problems)
        )


# --- URLs ---------------------------------------------------------------------------------


def check_urls(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """A required warehouse URL variable is set; the warehouse URL (and the SQL source's)
    parse and name a backend SQLAlchemy has. No connection is made."""
    environ = os.environ if environ is None else environ
    w = settings.warehouse
    if w.require_url and not (w.url_env and environ.get(w.url_env)):
        raise SettingsError(
            f"env {settings.env!r} needs the warehouse URL in the environment variable "
            f"{w.url_env} (warehouse.require_url is true), and it is not set: export "
            f"{w.url_env}=postgresql+psycopg://user@host:5432/db (the password in the URL)"
        )
    origin = f"${w.url_env}" if w.url_env and environ.get(w.url_env) else "warehouse.url"
    _check_url(settings.warehouse_url, origin, warehouse=True)
    _check_data_url(settings, environ)
    if settings.mlflow.require_tracking_uri and not settings.mlflow.tracking_uri:
        raise SettingsError(
            f"env {settings.env!r} needs a shared MLflow registry (mlflow.require_tracking_uri "
            "is true) and mlflow.tracking_uri is not set: export "
            "SALESFLOW_MLFLOW__TRACKING_URI=http://mlflow-host:5000"
        )


def _check_data_url(settings: Settings, environ: Mapping[str, str]) -> None:
    """The SQL source's URL: ``$<data.url_env>`` when set, else ``data.url`` (as the source
    resolves it); required when ``data.source`` is ``sql``."""
    d = settings.data
    url: str | None
    if d.url_env and environ.get(d.url_env):
        url, origin = environ[d.url_env], f"${d.url_env}"
    else:
        url, origin = d.url, "data.url"
    if url:
        _check_url(url, origin, warehouse=False)
    elif d.source == "sql":
        raise SettingsError(
            f"data.source is 'sql' but the environment variable {d.url_env} (data.url_env) is "
            "unset or empty and data.url is not set: export it or set data.url"
        )


def _check_url(url: str, origin: str, *, warehouse: bool) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from salesflow.storage.sqlengine import SUPPORTED, redact_url

    try:
        backend = make_url(url).get_backend_name()
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        # Not parsable, so not redactable: show the scheme only, never the rest.
        shown = f"{url.split('://', 1)[0][:40]}://..." if "://" in url else "no scheme://"
        raise SettingsError(
            f"{origin} is not a valid database URL ({shown}): {exc}; "
            "expected e.g. postgresql+psycopg://user@host:5432/db or sqlite:////abs/path.db"
        ) from None
    if warehouse and backend not in SUPPORTED:
        raise SettingsError(
            f"{origin} ({redact_url(url)}) uses backend {backend!r}; the warehouse supports "
            f"{list(SUPPORTED)}"
        )
