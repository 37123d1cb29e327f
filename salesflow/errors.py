"""What went wrong, and whose it is to fix: user errors vs transient I/O vs our failures.

* :class:`UserError` — a mistake the user can fix (a setting, a file, a column, a date).
  Reported once as one ``salesflow: ...`` line naming the thing to fix, **never retried**,
  exit code 2. Settings, data-validation, source and champion-compatibility errors derive
  from it.
* transient I/O (connection refused, timeouts, a database that is not up yet) — the only
  thing Prefect tasks retry (:func:`retry_transient` is their ``retry_condition_fn``).
* anything else is a failure of ours: exit code 1, with the traceback in the logs.

Every message that may hold a URL goes through :func:`redact` (passwords and tokens in
``scheme://user:password@host`` and ``?password=...`` are replaced by ``***``).
"""

from __future__ import annotations

import re
import socket
from typing import Any

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USER_ERROR",
    "TransientError",
    "UserError",
    "exit_code",
    "is_transient",
    "one_line",
    "redact",
    "retry_transient",
    "single_line",
]

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


class UserError(Exception):
    """A mistake the user can fix; the message names the setting, file or column."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(single_line(redact(message)))


class TransientError(ConnectionError):
    """An I/O failure that may go away by itself (retried by the tasks that do I/O)."""


# scheme://user:secret@host -> scheme://user:***@host ; ?password=x / &token=x -> ***
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|token|secret|api_key|apikey|access_key)=)[^&\s'\"]+",
    re.IGNORECASE,
)


def single_line(text: str) -> str:
    """``text`` on one line: its non-empty lines, stripped of list bullets, joined by '; '."""
    lines = [ln.strip().removeprefix("- ").strip() for ln in str(text).splitlines()]
    return "; ".join(ln for ln in lines if ln).replace(":;", ":")


def redact(text: Any) -> str:
    """``text`` with every password/token inside URLs replaced by ``***`` (safe to log)."""
    s = str(text)
    s = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", s)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}***", s)


_TRANSIENT_TEXT = (
    "connection refused",
    "could not connect",
    "connection reset",
    "timed out",
    "timeout expired",
    "temporarily unavailable",
    "server closed the connection",
    "too many connections",
    "the database system is starting up",
    "max retries exceeded",
    "503 service unavailable",
    "502 bad gateway",
    "database is locked",  # SQLite: another process holds the write lock
)


def is_transient(exc: BaseException | None) -> bool:
    """True for I/O failures worth retrying (never for a :class:`UserError`)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            return False
        if isinstance(exc, (TransientError, TimeoutError, socket.timeout)):
            return True
        if isinstance(exc, (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError)):
            return True
        if isinstance(exc, ConnectionError) and type(exc).__name__ == "WarehouseUnavailable":
            return True
        text = str(exc).lower()
        if any(t in text for t in _TRANSIENT_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed on transient I/O."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we only classify it
        return is_transient(exc)
    return False


def exit_code(exc: BaseException) -> int:
    """2 for a user error, 1 for anything else."""
    return EXIT_USER_ERROR if isinstance(exc, UserError) else EXIT_FAILURE


def one_line(exc: BaseException) -> str:
    """The error as the one ``salesflow: ...`` line the CLI prints (redacted)."""
    msg = single_line(redact(str(exc))) or type(exc).__name__
    if not isinstance(exc, UserError):
        msg = f"{type(exc).__name__}: {msg}"
    return f"salesflow: {msg}"
