"""Checks that run before any expensive work, so a run that cannot succeed fails in its
first seconds with one line naming the setting, file or column to fix.

* :func:`settings_problems` — settings alone (pure): horizon vs season (URLs are checked
  when the settings load, :mod:`salesflow.settings_checks`).
* :func:`environment_problems` — quick I/O with short timeouts: the local state folder and
  the MLflow registry are writable, an MLflow server answers, the data files exist and
  their headers hold the mapped columns.
* :func:`data_problems` — settings x the validated data (pure): the backtest and the final
  fit fit in the history, series ids fit the warehouse's primary key.

Each returns a list of problems (empty: go); :func:`raise_problems` turns them into one
:class:`PreflightError`. ``command`` is what is about to run: ``train``, ``retrain``,
``forecast`` or ``monitor``.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from features.calendar import period_step
from salesflow.config.settings import DataSection, Settings
from salesflow.data.schema import DATE, ID, SalesData
from salesflow.errors import TransientError, UserError, redact

TRAINING = ("train", "retrain")
WRITES_SERIES = ("forecast", "monitor")
# PostgreSQL refuses a B-tree index row over 2,704 bytes; the forecasts' primary key holds
# the model name, the series id and two dates, so ids stay well below it.
PG_MAX_ID_BYTES = 2_000
MLFLOW_TIMEOUT_S = 5.0
# MLflow's own HTTP client retries 7 times with backoff (minutes against a closed port).
MLFLOW_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


class PreflightError(UserError):
    """The run cannot succeed with these settings and this data; nothing was done yet."""


def raise_problems(problems: list[str]) -> None:
    """Raise one :class:`PreflightError` listing ``problems`` (nothing when empty)."""
    if problems:
        raise PreflightError("; ".join(problems))


class ServerUnreachable(TransientError):
    """The MLflow tracking server does not answer, and nothing else is wrong: in a flow run
    that is worth a retry (a server restarting), not a user's mistake to report once."""


def check_before_run(
    settings: Settings, command: str, data_span: bool = False, servers_transient: bool = False
) -> None:
    """Settings and environment checks; :class:`PreflightError` listing every problem.
    ``data_span``: also the backtest check on the data file's dates (the CLI, before any
    flow; the flows check it on the validated data). ``servers_transient`` (the flows): an
    MLflow server that does not answer, when it is the only problem, raises
    :class:`ServerUnreachable` (retried by the preflight task) instead."""
    problems = settings_problems(settings) + environment_problems(settings, command)
    if data_span and not problems and command in TRAINING:
        problems = _file_span_problems(settings, command)
    down = _server_down(settings.tracking_uri)
    if servers_transient and len(problems) == 1 and problems[0].startswith(down):
        raise ServerUnreachable(problems[0])
    raise_problems(problems)


def check_data_fits(settings: Settings, data: SalesData, command: str) -> None:
    """Settings x data checks; :class:`PreflightError` listing every problem."""
    raise_problems(data_problems(settings, data, command))


# --- settings alone -------------------------------------------------------------------


def settings_problems(settings: Settings) -> list[str]:
    """Problems of the settings alone (no I/O)."""
    out = []
    m, f = settings.model, settings.features
    # season_length is filled from data.freq when the settings load (never None here).
    if f.season_length is not None and m.horizon > f.season_length:
        out.append(
            f"model.horizon ({m.horizon}) is longer than features.season_length "
            f"({f.season_length}): forecasts past one season have no seasonal value to "
            "start from; lower model.horizon"
        )
    return out


# --- the environment: quick I/O -------------------------------------------------------


def environment_problems(settings: Settings, command: str) -> list[str]:
    """Local folders writable, MLflow answering, data files readable with their columns."""
    out = []
    if _uses_local_dir(settings):
        out += _writable(settings.local_dir, "paths.local_dir")
    uri = settings.tracking_uri
    if command in TRAINING and uri.startswith("sqlite:///"):
        out += _writable(Path(uri.removeprefix("sqlite:///")).parent, "the MLflow registry")
        out += _writable(settings.local_dir / "mlartifacts", "the MLflow artifact store")
    if uri.startswith(("http://", "https://")):
        out += mlflow_server_problems(uri)
    out += _source_problems(settings)
    return out


def _uses_local_dir(settings: Settings) -> bool:
    return (
        settings.tracking_uri.startswith("sqlite:///")
        and str(settings.local_dir) in settings.tracking_uri
    ) or settings.warehouse_url.startswith(f"sqlite:///{settings.local_dir}")


def _writable(folder: Path, what: str) -> list[str]:
    """Create ``folder`` if needed and prove a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return [
            f"{what} folder {folder} is not writable ({exc.strerror or exc}): fix its "
            "permissions or point paths.local_dir (SALESFLOW_PATHS__LOCAL_DIR) elsewhere"
        ]
    return []


def mlflow_server_problems(uri: str, timeout: float = MLFLOW_TIMEOUT_S) -> list[str]:
    """The MLflow tracking server at ``uri`` answers ``/health`` within ``timeout``."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return []
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            return []  # it answers; auth and routing are MLflow's to report
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    return [
        f"{_server_down(uri)} within {timeout:g} s ({reason}): start it, or fix "
        "mlflow.tracking_uri (SALESFLOW_MLFLOW__TRACKING_URI)"
    ]


def _server_down(uri: str) -> str:
    """The start of :func:`mlflow_server_problems`' message (check_before_run tells it
    apart from the other problems by it)."""
    return f"the MLflow tracking server {redact(uri)} does not answer"


def _source_problems(settings: Settings) -> list[str]:
    from salesflow.data.sources import check_source_files

    try:
        check_source_files(settings.data)
    except UserError as exc:
        return [str(exc)]
    return []


def _file_span_problems(settings: Settings, command: str) -> list[str]:
    """The backtest check on the data file's dates alone (one column read), before any
    flow: validation only drops rows, so a span too short now stays too short."""
    try:
        periods = file_periods(settings.data)
    except UserError as exc:
        return [str(exc)]
    if periods is None:
        return []
    held = settings.policy.holdout_periods if command == "retrain" else 0
    return backtest_problems(settings, periods - held, held)


def file_periods(data: DataSection) -> int | None:
    """Periods from the first to the last date (up to ``data.as_of``) of a long or Walmart
    file, reading its date column only; None for the other sources."""
    from salesflow.data.canonical import SourceError, to_dates
    from salesflow.data.datafiles import read_column
    from salesflow.data.long_format import history_paths, is_glob
    from salesflow.data.sources import long_files, walmart_file

    if data.source == "long" and data.path:
        m = data.long
        if is_glob(data.path):  # every file of the glob
            paths = history_paths(data.path, m)
        else:
            paths = [long_files(data.path, m).history or Path(data.path)]
        path = paths[0]
        columns = [read_column(p, m.date, m.encoding) for p in paths]
        dates = to_dates(pd.concat(columns, ignore_index=True), m.date, m.date_format)
        freq = data.freq
    elif data.source == "walmart" and data.path:
        path = walmart_file(Path(data.path), "train")
        dates, freq = to_dates(read_column(path, "Date"), "Date", "%Y-%m-%d"), "W-FRI"
    else:
        return None
    if dates.dropna().empty:
        raise SourceError(f"data file {path} has no rows with a date")
    if data.as_of is not None:
        kept = dates[dates <= pd.Timestamp(data.as_of)]
        if kept.empty:
            raise SourceError(
                f"no data on or before as_of {data.as_of} (--as-of) in {path}: it starts on "
                f"{dates.min():%Y-%m-%d}"
            )
        dates = kept
    return int((dates.max() - dates.min()) / period_step(freq)) + 1


def set_mlflow_http_limits() -> None:
    """Bound MLflow's HTTP retries and timeout for this process (unless already set)."""
    for k, v in MLFLOW_HTTP_ENV.items():
        os.environ.setdefault(k, v)


# --- settings x data ------------------------------------------------------------------


def n_periods(data: SalesData) -> int:
    """Periods on the regular grid from the first to the last date of the history."""
    if data.history.empty:
        return 0
    ds = data.history[DATE]
    return int((ds.max() - ds.min()) / period_step(data.freq)) + 1


def data_problems(settings: Settings, data: SalesData, command: str) -> list[str]:
    """Problems of these settings with this (validated) data, before features or fits."""
    out = []
    if command in TRAINING:
        held = settings.policy.holdout_periods if command == "retrain" else 0
        out += backtest_problems(settings, n_periods(data) - held, held)
    if command in WRITES_SERIES and _backend(settings.warehouse_url) == "postgresql":
        out += id_length_problems(data.history[ID])
    return out


def backtest_problems(settings: Settings, periods: int, held_out: int = 0) -> list[str]:
    """The final fit and the rolling backtest fit in ``periods`` of history."""
    m, b = settings.model, settings.backtest
    need = m.min_train_history + 1 + m.horizon + (b.n_origins - 1) * b.step
    if periods >= need:
        return []
    held = f" after the {held_out}-period holdout (policy.holdout_periods)" if held_out else ""
    return [
        f"data too short for the backtest: {periods} periods{held}, need {need} "
        f"(model.min_train_history {m.min_train_history} + 1 + model.horizon {m.horizon} + "
        f"(backtest.n_origins {b.n_origins} - 1) x backtest.step {b.step}); use more data "
        "(a later --as-of) or lower backtest.n_origins, backtest.step, model.horizon or "
        "model.min_train_history"
    ]


def id_length_problems(ids: pd.Series, limit: int = PG_MAX_ID_BYTES) -> list[str]:
    """Series ids longer than ``limit`` UTF-8 bytes (they break PostgreSQL's index)."""
    uniq = pd.Series(ids.unique())
    size = uniq.str.encode("utf-8").str.len()
    long = uniq[size > limit]
    if long.empty:
        return []
    shown = ", ".join(repr(i[:40] + "...") for i in long.head(3))
    return [
        f"{len(long)} series ids are longer than {limit:,} bytes (longest {int(size.max()):,}), "
        f"too long for the PostgreSQL warehouse's primary key: {shown}; shorten the key "
        "values (data.long.keys columns)"
    ]


def _backend(url: str) -> str | None:
    try:
        return make_url(url).get_backend_name()
    except sa.exc.ArgumentError:
        return None
