"""What the API's routes share (:class:`ServingState`): the settings, the champion holder,
the sales history, the metrics and the caches of the loaded champion."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from starlette.exceptions import HTTPException

from salesflow.config.settings import Settings
from salesflow.errors import redact
from salesflow.serving import queries
from salesflow.serving.api_metrics import ApiMetrics
from salesflow.serving.api_models import ModelRef
from salesflow.serving.champion import ChampionHolder, LoadedChampion
from salesflow.serving.history import HistoryCache

__all__ = ["ServingState"]

log = logging.getLogger("salesflow.serving.api")


class ServingState:
    """What the routes share: settings, the champion, the history, metrics, caches."""

    def __init__(self, settings: Settings, holder: ChampionHolder, history: HistoryCache) -> None:
        self.settings, self.holder, self.history = settings, holder, history
        self.metrics = ApiMetrics()
        self._info: dict[tuple[str, str], dict[str, Any]] = {}
        self._warmed: LoadedChampion | None = None
        holder.on_change(self._changed)

    def _changed(self, loaded: LoadedChampion) -> None:
        self.history.invalidate()  # a new champion reads the history as it is now
        self.metrics.show_model(loaded.name, loaded.version)
        self.warm()

    def warm(self) -> None:
        """Load the history and the champion's panel forecast in a background thread, so
        the first /predict does not pay for them (once per loaded champion)."""
        cur = self.holder.current
        if cur is None or cur is self._warmed:
            return
        self._warmed = cur
        threading.Thread(target=self._warm, args=(cur,), name="predict-warmup", daemon=True).start()

    def _warm(self, loaded: LoadedChampion) -> None:
        from salesflow.serving.predict import warm_predictions

        start = time.perf_counter()
        try:
            warm_predictions(loaded.model, self.history.get())
        except Exception as exc:  # noqa: BLE001 - the first /predict reports it
            log.warning(
                "warming up predictions of version %s failed: %s", loaded.version, redact(exc)
            )
            return
        log.info(
            "predictions of version %s warm in %.1f s", loaded.version, time.perf_counter() - start
        )

    def model_ref(self) -> ModelRef:
        cur = self.holder.current
        return ModelRef(name=self.holder.name, version=cur.version if cur else None)

    def header_model(self) -> tuple[str, str | None]:
        cur = self.holder.current
        return self.holder.name, cur.version if cur else None

    def champion(self) -> LoadedChampion:
        cur = self.holder.current
        if cur is None:
            raise HTTPException(503, f"no champion loaded: {self.holder.reason}")
        return cur

    def model_info(self, loaded: LoadedChampion) -> dict[str, Any]:
        key = (loaded.version, loaded.loaded_at.isoformat())
        if key not in self._info:
            self._info = {key: queries.model_info(self.settings, loaded)}
        return self._info[key]
