"""Deleting documents locks the datastore's own partition, not every datastore's.

A foreign key ``datastore_chunks.document_id -> datastore_documents ON DELETE CASCADE``
made PostgreSQL run an unpruned ``DELETE FROM datastore_chunks WHERE $1 = document_id``
for every deleted document, locking every partition and its indexes: at ~5,000
datastores the shared lock table overflowed. Migration 0009 replaced it with a trigger
whose statements name the datastore id as a literal (docs/scale.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from uuid import UUID

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from service.client import Client
from service.storage import documents, keyword, partitions
from service.storage.migrations import available_migrations, migrate
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


def test_the_migration_upgrades_a_database_with_chunks(pg_url: str) -> None:
    """Migrations 1-8 with a datastore, a chunk and a re-embedding's shadow (each with the
    old foreign key), then 0009: the keys are gone, the chunks stay, and a delete by SQL
    still takes them."""
    name = f"upgrade_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(pg_url, dbname=name)
    ds = uuid.uuid4()
    part = sql.Identifier(partitions.partition_name(ds))
    shadow = sql.Identifier(f"{partitions.partition_name(ds)}_next")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE public.retrieval_schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for m in available_migrations():
                if m.version < 9:
                    conn.execute(m.sql.encode())
                    conn.execute(
                        "INSERT INTO public.retrieval_schema_migrations VALUES (%s, %s)",
                        (m.version, m.name),
                    )
            conn.execute("INSERT INTO public.datastores (id, name) VALUES (%s, 'old')", (ds,))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE public.{} PARTITION OF public.datastore_chunks FOR VALUES IN ({})"
                ).format(part, sql.Literal(str(ds)))
            )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE public.{} (LIKE public.{} INCLUDING ALL,"
                    " FOREIGN KEY (document_id) REFERENCES public.datastore_documents (id)"
                    " ON DELETE CASCADE)"
                ).format(shadow, part)
            )
            docs = [uuid.uuid4(), uuid.uuid4()]
            for i, doc in enumerate(docs):
                conn.execute(
                    "INSERT INTO public.datastore_documents (id, datastore_id, external_id,"
                    " content_sha256) VALUES (%s, %s, %s, '')",
                    (doc, ds, f"d{i}"),
                )
                conn.execute(
                    "INSERT INTO public.datastore_chunks (datastore_id, document_id, chunk_index,"
                    " content, embedding) VALUES (%s, %s, 0, 'text', '[1,2]')",
                    (ds, doc),
                )
            fks = (
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
                " AND confrelid = 'public.datastore_documents'::regclass"
            )
            before = conn.execute(fks).fetchone()
            assert before is not None and before[0] >= 3  # parent, partition, shadow
            assert [m.version for m in migrate(url)] == [9]
            assert conn.execute(fks).fetchone() == (0,)
            count = sql.SQL("SELECT count(*) FROM public.{}").format(part)
            assert conn.execute(count).fetchone() == (2,)
            conn.execute("DELETE FROM public.datastore_documents WHERE id = %s", (docs[0],))
            assert conn.execute(count).fetchone() == (1,)
            conn.execute("DELETE FROM public.datastores WHERE id = %s", (ds,))
            assert conn.execute(count).fetchone() == (0,)
            # TRUNCATE fires no DELETE trigger: its own trigger empties the chunks.
            conn.execute("INSERT INTO public.datastores (id, name) VALUES (%s, 'again')", (ds,))
            conn.execute(
                "INSERT INTO public.datastore_documents (id, datastore_id, external_id,"
                " content_sha256) VALUES (%s, %s, 'd', '')",
                (docs[0], ds),
            )
            conn.execute(
                "INSERT INTO public.datastore_chunks (datastore_id, document_id, chunk_index,"
                " content, embedding) VALUES (%s, %s, 0, 'text', '[1,2]')",
                (ds, docs[0]),
            )
            conn.execute("TRUNCATE public.datastores CASCADE")
            assert conn.execute(count).fetchone() == (0,)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
