"""Holds the serving model snapshot. Requests read `manager.current` once and use that snapshot throughout."""
from __future__ import annotations

import logging
import threading

from model.pipeline import Embedder, load_checkpoint

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, embedder: Embedder, default_threshold: float, threshold_override: float | None = None):
        self._current = embedder
        self._lock = threading.Lock()
        self.default_threshold = default_threshold
        self.threshold_override = threshold_override
        self.previous: Embedder | None = None

    @property
    def current(self) -> Embedder:
        return self._current

    def threshold_for(self, embedder: Embedder) -> float:
        """Settings override, else the checkpoint's calibrated cosine threshold, else the default."""
        if self.threshold_override is not None:
            return self.threshold_override
        return float(embedder.thresholds.get("cosine", self.default_threshold))

    def switch(self, embedder: Embedder) -> Embedder:
        """Make `embedder` current (one reference assignment: atomic for readers). Returns the old one."""
        with self._lock:
            old, self._current = self._current, embedder
            self.previous = old
            return old

    @staticmethod
    def load(spec: str, device: str, precision: str) -> Embedder:
        return Embedder(load_checkpoint(spec), device, precision)
