"""The sales history the API predicts from: the configured source, loaded once and kept.

:class:`HistoryCache` loads ``settings.data`` with :func:`salesflow.sources.load_sales` on
the first :meth:`~HistoryCache.get` and hands the same :class:`SalesData` to every later
call, from any thread. For file sources (walmart, long) it notices when a file of the
source changes (modification time or size, looked at no more than once every
``check_seconds``) and loads it again; :meth:`~HistoryCache.invalidate` forces a reload
(e.g. after a new extract in a SQL table, which cannot be watched).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path

from salesflow.config.settings import DataSection, Settings
from salesflow.data.canonical import SourceError
from salesflow.data.long_format import history_paths, is_glob, long_files
from salesflow.data.schema import SalesData
from salesflow.data.sources import load_sales
from salesflow.errors import redact

__all__ = ["HistoryCache", "source_signature"]

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]


def _source_paths(data: DataSection) -> list[Path]:
    """The files (or the Walmart folder) the source reads, side files of long/sql included;
    none for the synthetic source or when the settings name no readable path yet."""
    if data.source == "walmart":
        return [Path(data.path)] if data.path else []
    if data.source not in ("long", "sql"):
        return []
    try:
        files = long_files(data.path if data.source == "long" else None, data.long)
    except SourceError:  # the load reports it, naming the setting
        return []
    out = [Path(p) for p in astuple(files) if p is not None]
    if data.source == "long" and is_glob(data.path):  # every file the pattern matches
        try:
            out = [*history_paths(data.path or "", data.long), *out[1:]]
        except SourceError:
            return []
    return out


def source_signature(data: DataSection) -> Signature:
    """(path, mtime_ns, size) of every file the source reads; a folder counts its files.
    Empty for sources without files (synthetic, a sql table without side files)."""
    out: list[tuple[str, int, int]] = []
    for path in _source_paths(data):
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for f in files:
            try:
                st = f.stat()
            except OSError:  # a file being replaced: its absence is a change too
                out.append((str(f), -1, -1))
                continue
            out.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(out)


class HistoryCache:
    """The configured source's :class:`SalesData`, loaded once, reloaded when it changes.

    Thread-safe: concurrent first calls load the source once; readers never see a half-
    loaded value. ``version`` counts the loads (1 after the first). A failed load raises
    to the caller when nothing was loaded yet; a failed reload logs a warning and keeps
    serving the data loaded before.
    """

    def __init__(
        self,
        settings: Settings,
        check_seconds: float = 2.0,
        loader: Callable[[DataSection], SalesData] = load_sales,
    ) -> None:
        self.data_section = settings.data
        self.check_seconds = check_seconds
        self._loader = loader
        self._lock = threading.Lock()
        self._data: SalesData | None = None
        self._signature: Signature = ()
        self._checked_at = 0.0
        self._stale = False
        self.version = 0
        self.loaded_at: float | None = None  # time.time() of the last load

    def get(self) -> SalesData:
        """The source's data; loaded now if never loaded, invalidated or changed on disk."""
        data = self._data
        if data is not None and not self._stale and not self._changed():
            return data
        with self._lock:
            if self._data is not None and not self._stale and not self._changed():
                return self._data
            return self._load()

    def invalidate(self) -> None:
        """The next :meth:`get` loads the source again."""
        self._stale = True

    def _changed(self) -> bool:
        """True when a file of the source differs from when it was loaded (checked at most
        every ``check_seconds``; never for sources without files)."""
        if not self._signature:
            return False
        now = time.monotonic()
        if now - self._checked_at < self.check_seconds:
            return False
        self._checked_at = now
        return source_signature(self.data_section) != self._signature

    def _load(self) -> SalesData:
        self._stale = False
        before = source_signature(self.data_section)
        try:
            data = self._loader(self.data_section)
        except Exception as exc:
            if self._data is None:
                raise
            # Keep serving what was loaded; the changed signature is seen again (and the
            # load retried) after check_seconds.
            log.warning("reloading the sales history failed, kept the loaded one: %s", redact(exc))
            self._checked_at = time.monotonic()
            return self._data
        # A file that changed while it was read keeps the older signature: the next check
        # after check_seconds loads it again.
        self._signature = before
        self._checked_at = time.monotonic()
        self._data = data
        self.version += 1
        self.loaded_at = time.time()
        return data
