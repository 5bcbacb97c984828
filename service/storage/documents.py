"""Rows of ``datastore_documents`` and their chunks (binary COPY on write)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from service.models import Document, DocumentInput, Page, PreparedChunk, StoredChunk
from service.storage.pagination import KEYSET_TEXT, decode_token, encode_token
from service.storage.partitions import partition_name

_COLUMNS = (
    "id, datastore_id, external_id, title, source, content_sha256, metadata, chunk_count,"
    " created_at, updated_at"
)


def _from_row(row: tuple[Any, ...]) -> Document:
    return Document(
        id=UUID(str(row[0])),
        datastore_id=UUID(str(row[1])),
        external_id=row[2],
        title=row[3],
        source=row[4],
        content_sha256=row[5],
        metadata=row[6] or {},
        chunk_count=int(row[7]),
        created_at=row[8],
        updated_at=row[9],
    )


class StoredVersion(NamedTuple):
    """What an unchanged document's ingest result reports, and the hash that says so."""

    content_sha256: str
    document_id: UUID
    chunk_count: int


def stored_versions(
    conn: psycopg.Connection, datastore_id: UUID, external_ids: Sequence[str]
) -> dict[str, StoredVersion]:
    """external_id -> its stored version, for those that exist."""
    rows = conn.execute(
        "SELECT external_id, content_sha256, id, chunk_count FROM public.datastore_documents"
        " WHERE datastore_id = %s AND external_id = ANY(%s)",
        (datastore_id, list(external_ids)),
    ).fetchall()
    return {r[0]: StoredVersion(r[1], UUID(str(r[2])), int(r[3])) for r in rows}


def upsert(
    conn: psycopg.Connection, datastore_id: UUID, doc: DocumentInput, sha256: str, chunk_count: int
) -> tuple[UUID, bool]:
    """Insert or update the document row; returns (id, created)."""
    row = conn.execute(
        "INSERT INTO public.datastore_documents AS d (datastore_id, external_id, title, source,"
        " content_sha256, metadata, chunk_count) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (datastore_id, external_id) DO UPDATE SET title = excluded.title,"
        " source = excluded.source, content_sha256 = excluded.content_sha256,"
        " metadata = excluded.metadata, chunk_count = excluded.chunk_count, updated_at = now()"
        " RETURNING d.id, (d.xmax = 0)",
        (
            datastore_id,
            doc.external_id,
            doc.title,
            doc.source,
            sha256,
            Jsonb(doc.metadata),
            chunk_count,
        ),
    ).fetchone()
    assert row is not None
    return UUID(str(row[0])), bool(row[1])


def replace_chunks(
    conn: psycopg.Connection,
    datastore_id: UUID,
    chunks_by_document: Sequence[tuple[UUID, Sequence[PreparedChunk]]],
) -> None:
    """Delete the documents' old chunks and write the new ones with one binary COPY."""
    partition = sql.Identifier(partition_name(datastore_id))
    conn.execute(
        sql.SQL("DELETE FROM public.{} WHERE document_id = ANY(%s)").format(partition),
        ([doc_id for doc_id, _ in chunks_by_document],),
    )
    copy_sql = sql.SQL(
        "COPY public.{} (datastore_id, document_id, chunk_index, content, metadata, embedding,"
        " token_count) FROM STDIN (FORMAT BINARY)"
    ).format(partition)
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
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM public.datastore_documents"
        " WHERE datastore_id = %s AND external_id = %s",
        (datastore_id, external_id),
    ).fetchone()
    return _from_row(row) if row else None


def chunks(conn: psycopg.Connection, datastore_id: UUID, document_id: UUID) -> list[StoredChunk]:
    rows = conn.execute(
        sql.SQL(
            "SELECT id, chunk_index, content, metadata, token_count FROM public.{}"
            " WHERE document_id = %s ORDER BY chunk_index"
        ).format(sql.Identifier(partition_name(datastore_id))),
        (document_id,),
    ).fetchall()
    return [StoredChunk(int(r[0]), int(r[1]), r[2], r[3] or {}, int(r[4])) for r in rows]


def list_page(
    conn: psycopg.Connection, datastore_id: UUID, limit: int, token: str
) -> Page[Document]:
    after = decode_token(token, KEYSET_TEXT)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM public.datastore_documents WHERE datastore_id = %s"
        " AND (%s::text IS NULL OR external_id > %s::text) ORDER BY external_id LIMIT %s",
        (datastore_id, after and after[0], after and after[0], limit + 1),
    ).fetchall()
    items = [_from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items, encode_token([items[-1].external_id]) if more else "")


def delete(conn: psycopg.Connection, datastore_id: UUID, external_ids: Sequence[str]) -> list[str]:
    """Delete documents and their chunks; returns the external ids that existed."""
    rows = conn.execute(
        "SELECT id, external_id FROM public.datastore_documents"
        " WHERE datastore_id = %s AND external_id = ANY(%s) FOR UPDATE",
        (datastore_id, list(external_ids)),
    ).fetchall()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    conn.execute(
        sql.SQL("DELETE FROM public.{} WHERE document_id = ANY(%s)").format(
            sql.Identifier(partition_name(datastore_id))
        ),
        (ids,),
    )
    conn.execute("DELETE FROM public.datastore_documents WHERE id = ANY(%s)", (ids,))
    return [r[1] for r in rows]
