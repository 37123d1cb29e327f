"""The champion the API serves: loaded from ``models:/<name>@<alias>``, swapped for the
new version when the alias moves (a background poll, or :meth:`ChampionHolder.refresh`).

A reload that fails keeps the champion already loaded (and logs why); before any champion
could be loaded, :attr:`ChampionHolder.current` is None and :attr:`ChampionHolder.reason`
says why (no version with the alias yet, an unreadable artifact, a registry that does not
answer).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import Any

from salesflow.config.settings import Settings
from salesflow.errors import redact
from salesflow.modelling.registry import get_alias_version, load_forecaster

__all__ = ["ChampionHolder", "LoadedChampion"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedChampion:
    """A loaded model version and where it came from."""

    model: Any  # salesflow.model.GlobalForecaster
    name: str
    version: str
    alias: str
    run_id: str
    loaded_at: dt.datetime


class ChampionHolder:
    """Holds the current champion; thread-safe to read while a reload swaps it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.model.name
        self.alias = settings.mlflow.champion_alias
        self._current: LoadedChampion | None = None
        self._reason = "the champion has not been loaded yet"
        self._lock = threading.Lock()  # one load at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Any] = []

    @property
    def current(self) -> LoadedChampion | None:
        """The loaded champion, or None (see :attr:`reason`)."""
        return self._current

    @property
    def reason(self) -> str:
        """Why there is no champion, or why the last reload failed ("" when it worked)."""
        return self._reason

    def on_change(self, callback: Any) -> None:
        """Call ``callback(loaded)`` after each swap to a new version (e.g. reload history)."""
        self._listeners.append(callback)

    def refresh(self, force: bool = False) -> bool:
        """Load the version the alias points to if it differs from the loaded one (or
        always, with ``force``); True when a new champion was swapped in. A failure keeps
        the current champion and is logged and kept in :attr:`reason`."""
        with self._lock:
            try:
                return self._refresh(force)
            except Exception as exc:  # noqa: BLE001 - keep serving the old champion
                self._reason = f"loading {self.name}@{self.alias} failed: {redact(exc)}"[:1000]
                log.warning("%s; keeping %s", self._reason, self._describe())
                return False

    def _refresh(self, force: bool) -> bool:
        uri = self.settings.tracking_uri
        mv = get_alias_version(uri, self.name, self.alias)
        if mv is None:
            raise LookupError(
                f"no version of {self.name!r} has the alias {self.alias!r} yet: train one "
                "(salesflow train)"
            )
        cur = self._current
        if cur is not None and cur.version == str(mv.version) and not force:
            self._reason = ""
            return False
        model, mv = load_forecaster(uri, self.name, self.alias)
        loaded = LoadedChampion(
            model, self.name, str(mv.version), self.alias, mv.run_id, dt.datetime.now(dt.UTC)
        )
        self._current, self._reason = loaded, ""
        log.info("serving %s version %s (alias %r)", self.name, loaded.version, self.alias)
        for callback in self._listeners:
            try:
                callback(loaded)
            except Exception:  # a listener's failure must not undo the swap
                log.exception("champion change listener failed")
        return cur is None or cur.version != loaded.version or force

    def _describe(self) -> str:
        cur = self._current
        return f"version {cur.version}" if cur else "no champion"

    def start(self) -> None:
        """Poll the alias every ``serving.poll_seconds`` in a daemon thread (0: never)."""
        every = self.settings.serving.poll_seconds
        if every <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll, args=(every,), name="champion-poll", daemon=True
        )
        self._thread.start()

    def _poll(self, every: float) -> None:
        while not self._stop.wait(every):
            self.refresh()

    def stop(self) -> None:
        """Stop the poll thread (waits for a reload in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
