"""Overload and abuse limits: answer early with a status and a wait instead of falling over.

* `Admission`: at most `workers` requests are scored at once and at most `queue` wait; the next
  one is refused at once with 503 and a Retry-After estimated from recent service times. Memory
  stays bounded however many clients arrive, and every request gets an answer.
* `RateLimiter`: images per minute per API key (or client address), the dashboard's sliding
  window (`access.rate_check`); over it, 429 with Retry-After.
* body size is checked by `app` before anything is read (413).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from contextlib import asynccontextmanager

from realitycheck.serving import access


class Refused(Exception):
    """A request answered with an error status; the message is safe to show (no server paths)."""

    def __init__(self, status: int, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.retry_after = status, kind, message, retry_after


class Admission:
    """A bounded queue in front of the workers (see the module docstring).

    Counts live on the event loop (no awaits between check and update), so they need no lock.
    """

    def __init__(self, workers: int, queue: int):
        self.workers, self.queue = max(1, int(workers)), max(0, int(queue))
        self.waiting = 0
        self.running = 0
        self._sem: asyncio.Semaphore | None = None
        self._recent = deque(maxlen=50)  # seconds per admitted request, for Retry-After

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:  # made on first use, inside the running loop
            self._sem = asyncio.Semaphore(self.workers)
        return self._sem

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead at the recent service time."""
        per = sorted(self._recent)[len(self._recent) // 2] if self._recent else 1.0
        return max(1, math.ceil((self.waiting + self.running) * per / self.workers))

    @asynccontextmanager
    async def slot(self):
        """Wait for a worker, or raise Refused(503) when the queue is full."""
        sem = self._semaphore()
        if self.running >= self.workers and self.waiting >= self.queue:
            raise Refused(503, "overloaded", f"the server is busy ({self.running} running, {self.waiting} "
                          "waiting); try again later", retry_after=self.retry_after())
        self.waiting += 1
        try:
            await sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.running -= 1
            self._recent.append(time.perf_counter() - t0)
            sem.release()


class RateLimiter:
    """Images per minute per caller (API key name, or the client address when keys are off)."""

    def __init__(self, per_minute: int, window_s: float = 60.0):
        self.per_minute, self.window_s = int(per_minute), float(window_s)
        self._stamps: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def check(self, caller: str, cost: int = 1, now: float | None = None) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            ok, kept, wait = access.rate_check(self._stamps.get(caller, []), now, self.per_minute, self.window_s, cost)
            self._stamps[caller] = kept
            if len(self._stamps) > 10_000:  # forget idle callers: memory stays bounded
                self._stamps = {k: v for k, v in self._stamps.items() if v and now - max(v) < self.window_s}
        if not ok:
            raise Refused(429, "rate_limited", access.rate_message(self.per_minute, wait, self.window_s)
                          .replace("This session is", "This caller is").replace("classifications", "images"),
                          retry_after=max(1, math.ceil(wait)))
