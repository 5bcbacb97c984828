"""Cheap bounds on how much a datastore holds."""

from __future__ import annotations

from uuid import UUID

import psycopg


def chunks_over(conn: psycopg.Connection, datastore_id: UUID, limit: int) -> bool:
    """Whether the datastore has more than ``limit`` chunks (reads at most limit + 1 rows)."""
    row = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM datastore_chunks WHERE datastore_id = %s LIMIT %s) s",
        (datastore_id, limit + 1),
    ).fetchone()
    return row is not None and int(row[0]) > limit
