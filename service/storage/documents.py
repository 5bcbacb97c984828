"""Rows of ``datastore_documents`` and their chunks (binary COPY on write)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from service.models import Document, DocumentInput, Page, PreparedChunk, StoredChunk
from service.storage.pagination import KEYSET_TEXT, decode_token, encode_token
from service.storage.partitions import partition_name

# Every column is NOT NULL and of the type its field names: rows map onto the models.
_COLUMNS = sql.SQL(
    "id, datastore_id, external_id, title, source, content_sha256, metadata, chunk_count,"
    " created_at, updated_at"
)
_DOCUMENTS = class_row(Document)
_CHUNKS = class_row(StoredChunk)

# Chunks are written through the parent table, pruned to the datastore's partition by
# a literal id (a parameter would leave a generic plan scanning every partition), so
# the parent's keyword-statistics triggers fire, never the partition's own. A
# statement-level PL/pgSQL trigger is compiled once per trigger in each backend that
# fires it, with its plans: a backend that wrote to thousands of partitions through
# their own triggers kept tens of thousands of cached plans, and PostgreSQL walks every
# one of them for each relation invalidation (so each CREATE TABLE of a new datastore
# cost every pooled connection hundreds of milliseconds at 5,000 datastores;
# docs/scale.md).
_PARENT = sql.SQL("public.datastore_chunks")


def _in_datastore(datastore_id: UUID) -> sql.Composable:
    return sql.SQL("datastore_id = {}::uuid").format(sql.Literal(str(datastore_id)))


class StoredVersion(NamedTuple):
    """What an unchanged document's ingest result reports, and the hash that says so."""

    content_sha256: str
    document_id: UUID
    chunk_count: int


def stored_versions(
    conn: psycopg.Connection, datastore_id: UUID, external_ids: Sequence[str]
) -> dict[str, StoredVersion]:
    """external_id -> its stored version, for those that exist."""
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT external_id, content_sha256, id AS document_id, chunk_count"
            " FROM public.datastore_documents WHERE datastore_id = %s AND external_id = ANY(%s)",
            (datastore_id, list(external_ids)),
        )
        .fetchall()
    )
    return {
        r["external_id"]: StoredVersion(r["content_sha256"], r["document_id"], r["chunk_count"])
        for r in rows
    }


def upsert(
    conn: psycopg.Connection, datastore_id: UUID, doc: DocumentInput, sha256: str, chunk_count: int
) -> tuple[UUID, bool]:
    """Insert or update the document row; returns (id, created)."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "INSERT INTO public.datastore_documents AS d (datastore_id, external_id, title, source,"
            " content_sha256, metadata, chunk_count) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (datastore_id, external_id) DO UPDATE SET title = excluded.title,"
            " source = excluded.source, content_sha256 = excluded.content_sha256,"
            " metadata = excluded.metadata, chunk_count = excluded.chunk_count, updated_at = now()"
            " RETURNING d.id, (d.xmax = 0) AS created",
            (
                datastore_id,
                doc.external_id,
                doc.title,
                doc.source,
                sha256,
                Jsonb(doc.metadata),
                chunk_count,
            ),
        )
        .fetchone()
    )
    assert row is not None
    return row["id"], row["created"]


def replace_chunks(
    conn: psycopg.Connection,
    datastore_id: UUID,
    chunks_by_document: Sequence[tuple[UUID, Sequence[PreparedChunk]]],
) -> None:
    """Delete the documents' old chunks and write the new ones with one binary COPY
    (into the parent, which routes every row to the datastore's partition)."""
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE {} AND document_id = ANY(%s)").format(
            _PARENT, _in_datastore(datastore_id)
        ),
        ([doc_id for doc_id, _ in chunks_by_document],),
    )
    copy_sql = sql.SQL(
        "COPY {} (datastore_id, document_id, chunk_index, content, metadata, embedding,"
        " token_count) FROM STDIN (FORMAT BINARY)"
    ).format(_PARENT)
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.set_types(["uuid", "uuid", "int4", "text", "jsonb", "vector", "int4"])
        for doc_id, chunks in chunks_by_document:
            for c in chunks:
                copy.write_row(
                    (
                        datastore_id,
                        doc_id,
                        c.chunk_index,
                        c.content,
                        Jsonb(c.metadata),
                        c.embedding,
                        c.token_count,
                    )
                )


def get(conn: psycopg.Connection, datastore_id: UUID, external_id: str) -> Document | None:
    query = sql.SQL(
        "SELECT {} FROM public.datastore_documents WHERE datastore_id = %s AND external_id = %s"
    ).format(_COLUMNS)
    return (
        conn.cursor(row_factory=_DOCUMENTS).execute(query, (datastore_id, external_id)).fetchone()
    )


def chunks(conn: psycopg.Connection, datastore_id: UUID, document_id: UUID) -> list[StoredChunk]:
    query = sql.SQL(
        "SELECT id, chunk_index, content, metadata, token_count FROM public.{}"
        " WHERE document_id = %s ORDER BY chunk_index"
    ).format(sql.Identifier(partition_name(datastore_id)))
    return conn.cursor(row_factory=_CHUNKS).execute(query, (document_id,)).fetchall()


def list_page(
    conn: psycopg.Connection, datastore_id: UUID, limit: int, token: str
) -> Page[Document]:
    after = decode_token(token, KEYSET_TEXT)
    query = sql.SQL(
        "SELECT {} FROM public.datastore_documents WHERE datastore_id = %s"
        " AND (%s::text IS NULL OR external_id > %s::text) ORDER BY external_id LIMIT %s"
    ).format(_COLUMNS)
    rows = (
        conn.cursor(row_factory=_DOCUMENTS)
        .execute(query, (datastore_id, after and after[0], after and after[0], limit + 1))
        .fetchall()
    )
    items = rows[:limit]
    more = len(rows) > limit
    return Page(items, encode_token([items[-1].external_id]) if more else "")


def delete(conn: psycopg.Connection, datastore_id: UUID, external_ids: Sequence[str]) -> list[str]:
    """Delete documents and their chunks; returns the external ids that existed."""
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT id, external_id FROM public.datastore_documents"
            " WHERE datastore_id = %s AND external_id = ANY(%s) ORDER BY external_id FOR UPDATE",
            (datastore_id, list(external_ids)),
        )
        .fetchall()
    )
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE {} AND document_id = ANY(%s)").format(
            _PARENT, _in_datastore(datastore_id)
        ),
        (ids,),
    )
    conn.execute("DELETE FROM public.datastore_documents WHERE id = ANY(%s)", (ids,))
    return [r["external_id"] for r in rows]
