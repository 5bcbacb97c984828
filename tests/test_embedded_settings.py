"""RETRIEVAL_EMBEDDED_SHARED_BUFFERS_MB reaches the embedded server, and unsetting it
resets the server to PostgreSQL's default at the next start."""

from __future__ import annotations

from pathlib import Path

import psycopg

from service.storage.embedded import EmbeddedPostgres


def _shared_buffers(server: EmbeddedPostgres) -> str:
    with psycopg.connect(server.start()) as conn:
        row = conn.execute("SHOW shared_buffers").fetchone()
    assert row is not None
    return str(row[0])


def test_shared_buffers_is_applied_at_start_and_reset_when_unset(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    configured = EmbeddedPostgres(pgdata, shared_buffers_mb=48)
    try:
        assert _shared_buffers(configured) == "48MB"
    finally:
        configured.stop()
    default = EmbeddedPostgres(pgdata)
    try:
        assert _shared_buffers(default) == "128MB"  # PostgreSQL's own default again
    finally:
        default.stop()
