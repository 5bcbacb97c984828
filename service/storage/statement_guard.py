"""Cancel a borrowed connection's statement when its call's deadline passes or its
client cancels.

PostgreSQL's ``statement_timeout`` (set once at connect) bounds every statement; a
call's own, shorter deadline is enforced from the client side instead, by sending a
cancel request when it passes. That costs nothing on the way in (no ``SET`` round trip
per call, which ``tests/test_round_trips.py`` would count) and one extra connection to
the server only when a deadline actually expires.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any

import psycopg

_log = logging.getLogger(__name__)

# After a cancel, the guard fires again at this interval until its borrow ends: a
# cancel that lands between two statements would otherwise leave the next one running.
REFIRE_S = 0.25
_CANCEL_TIMEOUT_S = 2.0


class StatementGuard:
    """One borrow of a connection: cancels its running statement until released."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn: psycopg.Connection[Any] | None = conn
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._conn is not None

    def fire(self) -> bool:
        """Cancel whatever the connection runs now; False once released."""
        # Under the lock: the borrow cannot end (and the connection go to another
        # call) while the cancel request is on its way.
        with self._lock:
            if self._conn is None:
                return False
            try:
                self._conn.cancel_safe(timeout=_CANCEL_TIMEOUT_S)
            except Exception as e:  # the database is gone: nothing left to cancel
                _log.debug("statement cancel failed: %s", e)
            return True

    def release(self) -> None:
        with self._lock:
            self._conn = None


class Watchdog:
    """One thread that fires guards when their time comes (and again every
    ``REFIRE_S`` until they are released). Released guards are dropped lazily."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, StatementGuard]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, when: float, guard: StatementGuard) -> None:
        """Fire ``guard`` at ``when`` (``time.monotonic()``) unless released first."""
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), guard))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sql-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is guard:
                self._cond.notify()  # earlier than what the thread sleeps towards

    def fire_now(self, guard: StatementGuard) -> None:
        """Cancel at once (the client cancelled), then keep cancelling until released."""
        if guard.fire():
            self.arm(time.monotonic() + REFIRE_S, guard)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    while self._heap and not self._heap[0][2].active:
                        heapq.heappop(self._heap)
                    if self._heap and self._heap[0][0] <= now:
                        guard = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            if guard.fire():
                self.arm(time.monotonic() + REFIRE_S, guard)


WATCHDOG = Watchdog()
