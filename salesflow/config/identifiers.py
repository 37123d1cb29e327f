"""The one rule for SQL table and schema names salesflow accepts (settings, warehouse
writes, SQL sources): plain identifiers, so they never need quoting tricks."""

from __future__ import annotations

import re

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_identifier(name: str, what: str = "table") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ``ValueError``."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid {what} name: use letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters"
        )
    return name
