"""Cheap bounds on how much a datastore holds."""

from __future__ import annotations

from uuid import UUID

import psycopg
from psycopg import sql

from service.storage.partitions import partition_name


def chunks_over(conn: psycopg.Connection, datastore_id: UUID, limit: int) -> bool:
    """Whether the datastore has more than ``limit`` chunks (reads at most limit + 1 rows)."""
    # The partition by name, never the parent with a parameter: a prepared statement's
    # generic plan over the parent locks every partition and its indexes, which at a few
    # thousand datastores overflows the lock table ("out of shared memory"; docs/scale.md).
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM (SELECT 1 FROM public.{} LIMIT %s) s").format(
            sql.Identifier(partition_name(datastore_id))
        ),
        (limit + 1,),
    ).fetchone()
    return row is not None and int(row[0]) > limit
