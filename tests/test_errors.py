"""The error taxonomy: user errors vs transient I/O vs our failures, and redaction."""

from __future__ import annotations

import pytest

from salesflow.errors import (
    EXIT_FAILURE,
    EXIT_USER_ERROR,
    TransientError,
    UserError,
    exit_code,
    is_transient,
    one_line,
    redact,
)


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("postgresql+psycopg://bob:s3cret@db:5432/x", "s3cret", "bob:***@db"),
        ("see http://u:p%40ss@mlflow:5000/api failed", "p%40ss", "http://u:***@mlflow"),
        ("https://host/path?token=abc123&x=1", "abc123", "token=***&x=1"),
        ("mysql://root:pw@h/db and postgresql://a:b@c/d", "pw@", "postgresql://a:***@c/d"),
    ],
)
def test_redact_hides_passwords_in_urls(text, hidden, kept):
    """Passwords and tokens inside URLs are replaced by ***; the rest stays readable."""
    out = redact(text)
    assert hidden not in out
    assert kept in out


def test_redact_leaves_plain_text_alone():
    """Text without credentials is unchanged."""
    assert redact("file /data/a.csv: column 'sales' missing") == (
        "file /data/a.csv: column 'sales' missing"
    )


def test_user_error_messages_are_redacted():
    """A UserError never carries a password, whatever the caller put in it."""
    assert "pw" not in str(UserError("bad url postgresql://u:pw@h/db"))


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError("[Errno 111] Connection refused"), True),
        (TimeoutError("read timed out"), True),
        (TransientError("db not up"), True),
        (RuntimeError("could not connect to server: Connection refused"), True),
        (UserError("column 'sales' missing: set data.long.target"), False),
        (KeyError("Open"), False),
        (ValueError("time data 'x' does not match format"), False),
    ],
)
def test_only_io_failures_are_transient(exc, transient):
    """Connection and timeout failures are retried; user mistakes and bugs are not."""
    assert is_transient(exc) is transient


def test_transient_cause_is_found_through_the_chain():
    """A wrapper raised from a connection error counts as transient."""
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("write failed") from inner
    except RuntimeError as exc:
        assert is_transient(exc)


def test_exit_codes_and_one_line():
    """User errors exit 2 with their message; our failures exit 1 and name the type."""
    assert exit_code(UserError("x")) == EXIT_USER_ERROR
    assert exit_code(KeyError("x")) == EXIT_FAILURE
    assert one_line(UserError("set data.path")) == "salesflow: set data.path"
    assert one_line(KeyError("Open")) == "salesflow: KeyError: 'Open'"
