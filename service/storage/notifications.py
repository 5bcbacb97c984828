"""LISTEN for change announcements (see migration 0003) on a dedicated connection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

_log = logging.getLogger(__name__)

CHANNEL = "retrieval_changes"


class ChangeListener:
    """Calls ``on_change`` for every announced change, and when the connection drops
    (changes may have been missed then), reconnecting with a short back-off."""

    def __init__(self, conninfo: str, on_change: Callable[[], None]) -> None:
        self._conninfo = conninfo
        self._on_change = on_change
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="change-listener", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self._on_change()  # anything cached before LISTEN may be stale
                    self._ready.set()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._on_change()
            except psycopg.Error as e:
                _log.warning("change listener lost its connection (%s); retrying", e)
                self._on_change()
                self._stop.wait(1.0)
