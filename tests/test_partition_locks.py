"""A datastore's statements lock its own partition, not every datastore's (many datastores)."""

from __future__ import annotations

from uuid import UUID

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from service.client import Client
from service.models import PreparedChunk
from service.storage import documents, keyword, partitions, sizes
from tests.helpers.rpc import ingest_vectors, vector_datastore


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


def _keyword_trigger_plans(conn: psycopg.Connection) -> int:
    """Cached plans of the keyword-statistics trigger statements in this backend."""
    row = conn.execute(
        "SELECT count(*) FROM pg_backend_memory_contexts"
        " WHERE name = 'CachedPlanSource' AND ident LIKE '%datastore_keyword_%'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_chunk_writes_compile_the_keyword_triggers_once_not_per_partition(
    client: Client, pg_url: str
) -> None:
    """A PL/pgSQL trigger is compiled, with its plans, once per trigger in each backend
    that fires it, and PostgreSQL walks every cached plan on each relation invalidation:
    writing through each partition's own triggers left a pooled connection with a few
    plans per datastore it wrote to, which made every CREATE TABLE of a new datastore
    slow at thousands of datastores. Writes go through the parent's triggers instead."""
    ids = [UUID(vector_datastore(client, dimensions=4).id) for _ in range(3)]
    for ds in ids:
        ingest_vectors(client, str(ds), np.ones((1, 4), dtype=np.float32))
    with psycopg.connect(pg_url) as conn:
        register_vector(conn)
        plans = []
        for ds in ids:
            row = conn.execute(
                "SELECT id FROM public.datastore_documents WHERE datastore_id = %s", (ds,)
            ).fetchone()
            assert row is not None
            chunk = PreparedChunk(0, "other words", np.full(4, 0.5, dtype=np.float32), 2, {})
            with conn.transaction():
                documents.replace_chunks(conn, ds, [(row[0], [chunk])])
            plans.append(_keyword_trigger_plans(conn))
        chunks, _, terms = keyword.stats(conn, ids[2])  # the statistics still follow
        assert (chunks, set(terms)) == (1, {"word"})
    assert plans[0] > 0  # the parent's triggers ran
    assert plans[1] == plans[0] and plans[2] == plans[0]
