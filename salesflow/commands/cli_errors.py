"""How the ``salesflow`` command reports what went wrong: one ``salesflow: ...`` line on
stderr, exit code 2 for a user error and 1 for anything else; tracebacks only in the
Prefect logs (and on the terminal with ``SALESFLOW_DEBUG=1``).

Also the parsing helpers whose failures are user errors (``--set`` JSON, dates), the
argument parser that reports its errors the same way, and the check that runs before a
flow starts (settings, environment, data files) so a doomed run stops in seconds.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import traceback
from typing import Any

from salesflow.errors import UserError, exit_code, one_line, single_line

DEBUG_VAR = "SALESFLOW_DEBUG"


def debug() -> bool:
    """True when ``SALESFLOW_DEBUG`` asks for tracebacks on the terminal."""
    return os.environ.get(DEBUG_VAR, "").lower() in ("1", "true", "yes")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are user errors (one line, exit code 2)."""

    def error(self, message: str) -> Any:  # argparse calls it and expects no return
        raise UserError(f"{message} (see {self.prog} --help)")


def parse_overrides(text: str | None) -> dict[str, Any] | None:
    """``--set`` JSON as a dict (None when not given); a UserError saying what is wrong."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"--set is not valid JSON ({exc.msg} at character {exc.pos}): {text!r}; "
            'write e.g. --set \'{"model": {"horizon": 13}}\''
        ) from None
    if not isinstance(value, dict):
        raise UserError(f"--set must be a JSON object of settings, got {text!r}")
    return value


def port_number(text: str) -> int:
    """argparse ``type`` of a ``--port`` option: a TCP port (1-65535), else a usage error."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return port


def parse_date(value: str | None, option: str) -> str | None:
    """``value`` checked as a date (returned as given); a UserError naming ``option``."""
    if value is None:
        return None
    import pandas as pd

    try:
        pd.Timestamp(value)
    except (ValueError, TypeError):
        raise UserError(f"{option} {value!r} is not a date: use YYYY-MM-DD") from None
    return value


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not s for s in seen):
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _environment_line(exc: BaseException) -> str | None:
    """A disk that is full or a SQLite file locked by another process, said plainly."""
    for e in _chain(exc):
        text = str(e).lower()
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "disk is full" in text:
            filename = getattr(e, "filename", None)
            where = f" writing {filename}" if filename else ""
            return (
                f"salesflow: no space left on device{where}: free disk space (or point "
                "paths.local_dir / the warehouse elsewhere) and run again"
            )
        if "database is locked" in text:
            return (
                "salesflow: the SQLite database is locked by another process (still after "
                "the retries): let the other run finish, stop the process holding it, or "
                "use PostgreSQL for concurrent runs"
            )
    return None


def report(exc: BaseException) -> int:
    """Print ``exc`` as one ``salesflow:`` line on stderr; return the exit code (2 for a
    user error, 1 otherwise: ours, or the machine's like a full disk)."""
    line = None if isinstance(exc, UserError) else _environment_line(exc)
    if debug():  # else the traceback of our failures is in the Prefect logs only
        traceback.print_exception(exc, file=sys.stderr)
    print(single_line(line or one_line(exc)), file=sys.stderr)
    return exit_code(exc)


class _NoUserTracebacks(logging.Formatter):
    """Formats as ``inner`` does, but without the traceback of a UserError."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, UserError) and not debug():
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(record)


def quiet_user_tracebacks() -> None:
    """Prefect's console handlers stop printing UserError tracebacks (the Prefect API log
    handler, i.e. the run's logs in the UI, keeps them). Idempotent."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # Prefect configures logging lazily; later calls keep handlers
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for lg in loggers:
        for h in getattr(lg, "handlers", []):
            if isinstance(h, PrefectConsoleHandler) and not isinstance(
                h.formatter, _NoUserTracebacks
            ):
                h.setFormatter(_NoUserTracebacks(h.formatter))


def check_before_flow(
    env: str | None,
    command: str,
    source: str | None,
    path: str | None,
    as_of: str | None,
    overrides: dict[str, Any] | None,
) -> None:
    """Settings, environment and data-file checks (headers, and the backtest against the
    file's dates) in this process, before a flow (and a temporary Prefect server) starts;
    raises the first user error found."""
    from salesflow.commands.preflight import check_before_run, set_mlflow_http_limits
    from salesflow.config.settings import load_settings, settings_overrides

    parse_date(as_of, "--as-of")
    set_mlflow_http_limits()
    settings = load_settings(env, **settings_overrides(source, path, as_of, overrides))
    check_before_run(settings, command, data_span=True)
