"""Deleting documents locks the datastore's own partition, not every datastore's.

A foreign key ``datastore_chunks.document_id -> datastore_documents ON DELETE CASCADE``
made PostgreSQL run an unpruned ``DELETE FROM datastore_chunks WHERE $1 = document_id``
for every deleted document, locking every partition and its indexes: at ~5,000
datastores the shared lock table overflowed. Migration 0009 replaced it with a trigger
whose statements name the datastore id as a literal (docs/scale.md).
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import numpy as np
import psycopg
import pytest

from service.client import Client
from service.storage import documents, keyword, partitions
from tests.helpers.rpc import ingest_vectors, vector_datastore

# Relations of the public schema this backend holds a lock on: tables, partitions,
# indexes (catalog locks are released at once and not counted).
_LOCKED = (
    "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
    " WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation'"
    " AND c.relnamespace = 'public'::regnamespace"
)


def _populated(client: Client, n: int) -> list[UUID]:
    """``n`` datastores made through the service, each with one one-chunk document."""
    ids = []
    for _ in range(n):
        ds = vector_datastore(client, dimensions=4)
        ingest_vectors(client, ds.id, np.ones((1, 4), dtype=np.float32))
        ids.append(UUID(ds.id))
    return ids


def _relations_of(conn: psycopg.Connection, ids: list[UUID]) -> set[str]:
    """The partitions of these datastores and their indexes."""
    names = [partitions.partition_name(i) for i in ids]
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relname = ANY(%s)"
        " UNION SELECT ic.relname FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid"
        " JOIN pg_class ic ON ic.oid = x.indexrelid WHERE t.relname = ANY(%s)",
        (names, names),
    ).fetchall()
    return {str(r[0]) for r in rows}


def _chunks(conn: psycopg.Connection, datastore_id: UUID) -> int:
    row = conn.execute(
        "SELECT count(*) FROM public.datastore_chunks WHERE datastore_id = %s", (datastore_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _by_storage(conn: psycopg.Connection, ds: UUID) -> None:
    assert documents.delete(conn, ds, ["v0"]) == ["v0"]


def _by_sql_document(conn: psycopg.Connection, ds: UUID) -> None:
    conn.execute("DELETE FROM public.datastore_documents WHERE datastore_id = %s", (ds,))


def _by_sql_datastore(conn: psycopg.Connection, ds: UUID) -> None:
    """Agentopia's UI: datastores -> datastore_documents (cascade) -> chunks (trigger)."""
    conn.execute("DELETE FROM public.datastores WHERE id = %s", (ds,))


@pytest.mark.parametrize(
    "delete",
    [_by_storage, _by_sql_document, _by_sql_datastore],
    ids=["DeleteDocuments", "sql-document", "sql-datastore"],
)
def test_deleting_a_document_locks_one_partition_whatever_the_number_of_datastores(
    client: Client, pg_url: str, delete: Callable[[psycopg.Connection, UUID], None]
) -> None:
    def locked_by_delete(ds: UUID) -> set[str]:
        with psycopg.connect(pg_url) as conn, conn.transaction(force_rollback=True):
            delete(conn, ds)
            assert _chunks(conn, ds) == 0  # the chunks went with the document
            return {str(r[0]) for r in conn.execute(_LOCKED).fetchall()}

    few = _populated(client, 3)
    before = locked_by_delete(few[0])
    many = few + _populated(client, 40)
    after = locked_by_delete(many[-1])
    with psycopg.connect(pg_url) as conn:
        own = _relations_of(conn, [many[-1]])
        others = _relations_of(conn, many[:-1])
    assert partitions.partition_name(many[-1]) in after
    assert not after & others, sorted(after & others)[:10]
    # The same relations, renamed from one datastore's to the other's: a constant count,
    # where the foreign key's cascade locked ~7 more relations per datastore.
    assert len(after) == len(before), (sorted(before), sorted(after))
    assert len(after - own) <= 25, sorted(after)


def test_deleting_by_sql_removes_the_chunks_and_only_those(client: Client, pg_url: str) -> None:
    """No orphan chunk is left when a document or a datastore row is deleted by SQL
    (no foreign key holds them any more), and other datastores keep theirs."""
    gone_doc, gone_ds, kept = _populated(client, 3)
    ingest_vectors(client, str(gone_doc), np.ones((2, 4), dtype=np.float32), prefix="w")
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "DELETE FROM public.datastore_documents WHERE datastore_id = %s AND external_id = 'v0'",
            (gone_doc,),
        )
        conn.execute("DELETE FROM public.datastores WHERE id = %s", (gone_ds,))
        conn.commit()
        assert _chunks(conn, gone_doc) == 2  # the other two documents' chunks stay
        assert _chunks(conn, gone_ds) == 0
        assert _chunks(conn, kept) == 1
        orphans = conn.execute(
            "SELECT count(*) FROM public.datastore_chunks c WHERE c.datastore_id = ANY(%s)"
            " AND NOT EXISTS (SELECT 1 FROM public.datastore_documents d"
            " WHERE d.id = c.document_id)",
            ([gone_doc, gone_ds, kept],),
        ).fetchone()
        assert orphans == (0,)
        chunks, _, _ = keyword.stats(conn, gone_doc)  # the statistics followed
        assert chunks == 2


def test_no_foreign_key_ties_chunks_to_documents(pg_url: str) -> None:
    """Nor on any partition (its cascade would lock every partition again)."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
            " AND confrelid = 'public.datastore_documents'::regclass"
        ).fetchone()
    assert row == (0,)
