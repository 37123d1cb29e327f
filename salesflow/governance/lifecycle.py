"""The effects of a policy decision: MLflow alias moves, version tags, and the audit trail.

Alias semantics (``champion_alias`` and ``policy.previous_alias``, by default
``champion`` and ``previous``):

* :func:`promote` moves ``previous`` to the outgoing champion, then ``champion`` to the new
  version. The version that loses ``previous`` (if it is not the one being promoted) is
  tagged ``salesflow.status=retired``, so at most one version reads ``previous``.
* :func:`rollback` points ``champion`` at the version holding ``previous`` (or a named
  version) and then **removes** ``previous``. MLflow keeps no alias history, so the only
  other candidate would be the rolled-back-from version, which the rollback has just judged
  bad: pointing ``previous`` there would make a second rollback flip-flop back to it. After
  a rollback a further ``rollback`` therefore fails until the next promotion sets
  ``previous`` again, and its message says to name a version (``--to VERSION``). The audit
  table holds the full history.
* :func:`reject` tags the challenger and moves no alias.

Status tags (``salesflow.status``): ``champion``, ``previous``, ``retired``, ``rejected``,
``rolled_back``. The alias moves are separate registry calls, not one transaction; each
step leaves ``champion`` pointing at a valid version.

The audit trail (:func:`record_audit`) is one warehouse row per action plus
``salesflow.last_action*`` tags on the affected versions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa

from salesflow.config.settings import PolicySection
from salesflow.modelling.registry import ChampionNotFound, client, get_alias_version
from salesflow.storage.sqlengine import open_engine
from salesflow.storage.sqlstore import check_identifier, read_frame, write_frame

STATUS = "salesflow.status"
PROMOTED_AT = "salesflow.promoted_at"
REJECT_REASON = "salesflow.reject_reason"
ROLLED_BACK_AT = "salesflow.rolled_back_at"
LAST_ACTION = "salesflow.last_action"
LAST_ACTION_AT = "salesflow.last_action_at"
LAST_ACTION_REASON = "salesflow.last_action_reason"
AUDIT_ACTIONS = ("promote", "reject", "rollback")
MAX_TAG_TEXT = 500
Action = Literal["promote", "reject", "rollback"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(at: dt.datetime) -> str:
    return at.isoformat(timespec="seconds")


def _versions(c: Any, model_name: str) -> list[str]:
    found = c.search_model_versions(f"name = '{model_name}'")
    return sorted((str(v.version) for v in found), key=lambda v: (len(v), v))


def _require_version(c: Any, model_name: str, version: str | int) -> str:
    """``version`` as a string if the model has it, else ``ValueError`` listing those it has."""
    version = str(version).strip()
    known = _versions(c, model_name)
    if version not in known:
        listed = ", ".join(known) if known else "none: the model is not registered"
        raise ValueError(
            f"model {model_name!r} has no version {version!r} (versions: {listed}); "
            "name an existing version, e.g. salesflow rollback --to VERSION"
        )
    return version


def _check_aliases(champion_alias: str, policy: PolicySection) -> None:
    if champion_alias == policy.previous_alias:
        raise ValueError(
            f"champion alias and policy.previous_alias are both {champion_alias!r}; "
            "they must differ"
        )


def _tag(c: Any, model_name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        c.set_model_version_tag(model_name, version, key, value)


# --- alias moves --------------------------------------------------------------------------


def promote(
    tracking_uri: str,
    model_name: str,
    version: str | int,
    policy: PolicySection,
    champion_alias: str = "champion",
) -> dict[str, str | None]:
    """Make ``version`` the champion; the outgoing champion becomes ``previous``.

    Returns ``{"from_version", "to_version"}`` (``from_version`` None when there was no
    champion). Promoting the current champion again changes nothing. Raises
    ``ValueError`` when the version does not exist.
    """
    _check_aliases(champion_alias, policy)
    c = client(tracking_uri)
    version = _require_version(c, model_name, version)
    current = get_alias_version(tracking_uri, model_name, champion_alias)
    old = None if current is None else str(current.version)
    if old == version:
        return {"from_version": old, "to_version": version}
    at = _iso(_now())
    if old is not None:
        prev = get_alias_version(tracking_uri, model_name, policy.previous_alias)
        if prev is not None and str(prev.version) not in (old, version):
            _tag(c, model_name, str(prev.version), {STATUS: "retired"})
        c.set_registered_model_alias(model_name, policy.previous_alias, old)
        _tag(c, model_name, old, {STATUS: "previous"})
    c.set_registered_model_alias(model_name, champion_alias, version)
    _tag(c, model_name, version, {STATUS: "champion", PROMOTED_AT: at})
    return {"from_version": old, "to_version": version}


def reject(tracking_uri: str, model_name: str, version: str | int, reason: str) -> None:
    """Tag ``version`` as rejected with ``reason`` (truncated to 500 characters); no alias moves."""
    c = client(tracking_uri)
    version = _require_version(c, model_name, version)
    _tag(c, model_name, version, {STATUS: "rejected", REJECT_REASON: reason[:MAX_TAG_TEXT]})


def rollback(
    tracking_uri: str,
    model_name: str,
    to_version: str | int | None = None,
    policy: PolicySection | None = None,
    champion_alias: str = "champion",
) -> dict[str, str | None]:
    """Point the champion alias back at the ``previous`` version, or at ``to_version``.

    Afterwards ``previous`` is removed (see the module docstring), the rolled-back-from
    version is tagged ``salesflow.status=rolled_back`` and the target ``champion``.
    ``policy`` None means the default policy (alias ``previous``). Returns
    ``{"from_version", "to_version"}``. Raises :class:`~salesflow.registry.ChampionNotFound`
    when there is no champion, ``ValueError`` when there is no previous version and none is
    named, when the named version does not exist, or when it already is the champion.
    """
    policy = policy or PolicySection()
    _check_aliases(champion_alias, policy)
    c = client(tracking_uri)
    current = get_alias_version(tracking_uri, model_name, champion_alias)
    if current is None:
        raise ChampionNotFound(
            f"no version of model {model_name!r} has the alias {champion_alias!r}: "
            "there is no champion to roll back"
        )
    cur = str(current.version)
    prev = get_alias_version(tracking_uri, model_name, policy.previous_alias)
    if to_version is not None:
        target = _require_version(c, model_name, to_version)
    elif prev is not None:
        target = str(prev.version)
    else:
        raise ValueError(
            f"no version of model {model_name!r} has the alias {policy.previous_alias!r}, so "
            f"there is nothing to roll back to (a rollback removes it; a promotion sets it); "
            f"name a version instead: salesflow rollback --to VERSION "
            f"(versions: {', '.join(_versions(c, model_name))}; champion: {cur})"
        )
    if target == cur:
        raise ValueError(f"version {target} of model {model_name!r} already is the champion")
    at = _iso(_now())
    c.set_registered_model_alias(model_name, champion_alias, target)
    _tag(c, model_name, target, {STATUS: "champion", PROMOTED_AT: at})
    _tag(c, model_name, cur, {STATUS: "rolled_back", ROLLED_BACK_AT: at})
    if prev is not None:
        c.delete_registered_model_alias(model_name, policy.previous_alias)
        if str(prev.version) not in (target, cur):
            _tag(c, model_name, str(prev.version), {STATUS: "retired"})
    return {"from_version": cur, "to_version": target}


# --- audit trail --------------------------------------------------------------------------


def audit_table(name: str = "model_audit", schema: str | None = None) -> sa.Table:
    """The audit table: one row per promote / reject / rollback, keyed by ``event_id``."""
    check_identifier(name, "table")
    if schema is not None:
        check_identifier(schema, "schema")

    def col(n: str, t: Any = sa.Text, null: bool = False) -> sa.Column:
        return sa.Column(n, t, nullable=null)

    return sa.Table(
        name,
        sa.MetaData(),
        col("event_id"),
        col("at", sa.DateTime(timezone=True)),
        col("action"),
        col("model_name"),
        col("from_version", null=True),
        col("to_version", null=True),
        col("reason"),
        col("metrics"),
        col("flow_run_id", null=True),
        col("actor"),
        col("env", null=True),
        sa.PrimaryKeyConstraint("event_id"),
        sa.Index(f"ix_{name}_model_at"[:63], "model_name", "at"),
        schema=schema,
    )


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses as dicts, NaN/inf as null, numpy as Python."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _affected(action: Action, from_version: str | None, to_version: str | None) -> list[str]:
    # A reject changes only the challenger (to_version); the champion stays as it was.
    versions = [to_version] if action == "reject" else [from_version, to_version]
    return list(dict.fromkeys(v for v in versions if v is not None))


def record_audit(
    url: str,
    table_name: str,
    action: Action,
    model_name: str,
    from_version: str | int | None,
    to_version: str | int | None,
    reason: str,
    metrics: dict[str, Any],
    flow_run_id: str | None = None,
    actor: str = "cli",
    tracking_uri: str | None = None,
    schema: str | None = None,
    env: str | None = None,
) -> dict[str, Any]:
    """Write one audit row to the warehouse at ``url`` and tag the affected MLflow versions.

    ``from_version`` / ``to_version``: the champion before and after (promote, rollback);
    for a reject, ``to_version`` is the rejected challenger and ``from_version`` the
    champion it was measured against. ``metrics`` may hold dataclasses (e.g. a Scorecard),
    numpy scalars and NaN (stored as null). With ``tracking_uri``, the affected versions
    (both for promote/rollback, the challenger for reject) get ``salesflow.last_action``,
    ``salesflow.last_action_at`` and ``salesflow.last_action_reason`` tags, written after
    the row. ``env`` is the config env the acting run loaded. The table is created if
    missing (and gains the ``env`` column if it predates it). Returns the row as written.
    """
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"action must be one of {AUDIT_ACTIONS}, got {action!r}")
    at = _now()
    row: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "at": at,
        "action": action,
        "model_name": model_name,
        "from_version": None if from_version is None else str(from_version),
        "to_version": None if to_version is None else str(to_version),
        "reason": reason,
        "metrics": json.dumps(_plain(metrics), sort_keys=True, allow_nan=False),
        "flow_run_id": flow_run_id,
        "actor": actor,
        "env": env,
    }
    # The row first: a warehouse that cannot take it fails the call before any tag moves.
    write_frame(url, pd.DataFrame([row]), audit_table(table_name, schema))
    if tracking_uri is not None:
        versions = _affected(action, row["from_version"], row["to_version"])
        tag_last_action(tracking_uri, model_name, action, versions, row)
    return row


def tag_last_action(
    tracking_uri: str,
    model_name: str,
    action: str,
    versions: Sequence[str | None],
    row: dict[str, Any],
) -> None:
    """Tag ``versions`` (None skipped) with the audit ``row``'s action, time and reason."""
    c = client(tracking_uri)
    at = row["at"] if isinstance(row["at"], dt.datetime) else pd.Timestamp(row["at"])
    tags = {
        LAST_ACTION: action,
        LAST_ACTION_AT: _iso(at),
        LAST_ACTION_REASON: str(row["reason"])[:MAX_TAG_TEXT],
    }
    for version in dict.fromkeys(v for v in versions if v is not None):
        _tag(c, model_name, str(version), tags)


def delete_audit(url: str, table_name: str, event_id: str, schema: str | None = None) -> int:
    """Delete the audit row ``event_id`` (the compensating write of an alias move that
    failed after its row was written); returns the rows deleted."""
    table = audit_table(table_name, schema)
    with open_engine(url, write=True) as engine, engine.begin() as conn:
        return conn.execute(sa.delete(table).where(table.c.event_id == event_id)).rowcount


def check_audit_writable(url: str, table_name: str, schema: str | None = None) -> None:
    """Fail before any alias moves when the warehouse cannot take an audit row: it must
    answer and hold (or accept) the audit table. Raises
    :class:`~salesflow.sqlengine.WarehouseUnavailable` or the database's error."""
    from salesflow.storage.sqlengine import connect
    from salesflow.storage.sqlstore import ensure_table

    with open_engine(url, write=True) as engine:
        with connect(engine, url):
            pass
        ensure_table(engine, audit_table(table_name, schema))


def read_audit(
    url: str,
    table_name: str = "model_audit",
    schema: str | None = None,
    model_name: str | None = None,
) -> pd.DataFrame:
    """Audit rows, oldest first (optionally of one model); empty if the table is missing.

    Columns as in :func:`audit_table`; ``at`` is datetime64[ns, UTC]; ``metrics`` JSON text.
    """
    filters = {} if model_name is None else {"model_name": model_name}
    rows = read_frame(url, audit_table(table_name, schema), **filters)
    return rows.sort_values("at", kind="stable").reset_index(drop=True)
