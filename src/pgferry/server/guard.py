"""In-process guards of the service: failed token checks per address, and found tokens.

Contract: :class:`Limiter` counts failed attempts per address in a sliding window
(``[service] auth_failures`` within ``auth_window``); :class:`TokenCache` keeps a token
found for a second, so a revoked token stops working within a second. Both are
per process, thread-safe, and hold no secret (keys are hashes).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from pgferry.jobs import tokens


class Limiter:
    """Failed attempts per address in a sliding window."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window = limit, window_s
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        q = self._fails.setdefault(address, deque())
        while q and now - q[0] > self.window:
            q.popleft()
        return q

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: it may now)."""
        now = time.monotonic()
        with self._lock:
            q = self._recent(address, now)
            return self.window - (now - q[0]) if len(q) >= self.limit else 0.0

    def fail(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(address, now).append(now)


class TokenCache:
    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl = ttl_s
        self._hits: dict[str, tuple[float, tokens.Token]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tokens.Token | None:
        with self._lock:
            hit = self._hits.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def put(self, key: str, token: tokens.Token) -> None:
        with self._lock:
            if len(self._hits) > 10_000:
                self._hits.clear()
            self._hits[key] = (time.monotonic(), token)

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()
