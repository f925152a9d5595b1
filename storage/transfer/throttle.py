"""A shared bandwidth cap for copies (edge machines often share a thin link)."""

from __future__ import annotations

import threading
import time


class Throttle:
    """Sleeps callers so that bytes passed through stay under ``max_rate`` bytes per second.

    ``max_rate`` None or 0 means no cap (and no cost).
    """

    def __init__(self, max_rate: float | None) -> None:
        self.max_rate = max_rate or 0.0
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._bytes = 0

    def consume(self, n: int) -> None:
        """Account for ``n`` bytes, sleeping if the cap is exceeded."""
        if not self.max_rate:
            return
        with self._lock:
            self._bytes += n
            due = self._start + self._bytes / self.max_rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
