"""A datastore's statements lock its own partition, not every datastore's (many datastores)."""

from __future__ import annotations

from uuid import UUID

import psycopg

from service.client import Client
from service.storage import partitions, sizes
from tests.helpers.rpc import vector_datastore


def _locked_partitions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        " JOIN pg_inherits i ON i.inhrelid = c.oid"
        " WHERE l.pid = pg_backend_pid() AND i.inhparent = 'public.datastore_chunks'::regclass"
    ).fetchall()
    return {str(r[0]) for r in rows}


def test_the_exact_search_size_check_locks_one_partition_under_a_generic_plan(
    client: Client, pg_url: str
) -> None:
    """A generic plan over the parent would lock every partition: at a few thousand
    datastores the lock table overflows ("out of shared memory")."""
    ids = [UUID(vector_datastore(client, dimensions=4).id) for _ in range(3)]
    with psycopg.connect(pg_url) as conn:
        conn.prepare_threshold = 0  # prepared at once, as the pool's connections end up
        conn.execute("SET plan_cache_mode = force_generic_plan")
        for _ in range(2):
            assert not sizes.chunks_over(conn, ids[0], 10)
        locked = _locked_partitions(conn)
    assert partitions.partition_name(ids[0]) in locked
    assert not locked & {partitions.partition_name(i) for i in ids[1:]}
