"""One Prefect task per pipeline step, each a thin wrapper over a core function."""

from __future__ import annotations

from typing import Any

from salesflow.errors import retry_transient

# The retry policy of every task that does I/O (source reads, registry, warehouse): two
# more tries, 5 s apart, and only when the failure is transient I/O, never a user's mistake.
TRANSIENT_IO_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": 5,
    "retry_condition_fn": retry_transient,
}
