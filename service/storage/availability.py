"""Whether the database can be reached, decided by a probe that runs only after a
failure and keeps running until the database answers again.

While it cannot be reached, calls fail UNAVAILABLE at once instead of waiting out the
pool's timeout, and health reports NOT_SERVING; the first good probe restores both.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

_log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 2  # libpq's smallest


class Availability:
    """``available`` is False from a failed probe until a good one; ``suspect()``
    after any connection failure starts the probing."""

    def __init__(
        self, conninfo: str, *, interval_s: float, on_recovered: Callable[[], None]
    ) -> None:
        self.conninfo = conninfo
        self.available = True
        self._interval_s = interval_s
        self._on_recovered = on_recovered
        self._lock = threading.Lock()
        self._probing = False
        self._closed = threading.Event()

    def suspect(self) -> None:
        """A connection failed: probe now (one probe thread at a time)."""
        with self._lock:
            if self._probing or self._closed.is_set():
                return
            self._probing = True
        threading.Thread(target=self._run, name="db-probe", daemon=True).start()

    def close(self) -> None:
        self._closed.set()

    def probe(self) -> bool:
        """True when a new connection opens and answers."""
        try:
            with psycopg.connect(
                self.conninfo, connect_timeout=_CONNECT_TIMEOUT_S, autocommit=True
            ) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            _log.debug("database probe failed: %s", e)
            return False
        return True

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                if self.probe():
                    if not self.available:
                        _log.warning("database reachable again")
                        self._on_recovered()
                        self.available = True
                    return
                if self.available:
                    _log.warning("database unreachable; calls fail UNAVAILABLE until it returns")
                    self.available = False
                self._closed.wait(self._interval_s)
        finally:
            with self._lock:
                self._probing = False
