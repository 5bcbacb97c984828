"""Reading a datastore's documents and chunks in order, for export."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from service.models import JsonObject, Vector
from service.storage.partitions import partition_name

_FETCH_ROWS = 256  # rows per round trip of the server-side cursor: the memory bound


class ExportRow(NamedTuple):
    """One chunk with its document's fields (repeated on each of its chunks)."""

    external_id: str
    title: str
    source: str
    document_metadata: JsonObject
    chunk_index: int
    content: str
    chunk_metadata: JsonObject
    token_count: int
    vector: Vector


def export_rows(conn: psycopg.Connection, datastore_id: UUID) -> Iterator[ExportRow]:
    """Every chunk of the datastore by (external_id, chunk_index), from one snapshot,
    through a server-side cursor. ``conn`` must be in a fresh transaction."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    query = sql.SQL(
        "SELECT d.external_id, d.title, d.source, d.metadata AS document_metadata,"
        " c.chunk_index, c.content, c.metadata AS chunk_metadata, c.token_count,"
        " c.embedding AS vector FROM public.datastore_documents d"
        " JOIN public.{} c ON c.document_id = d.id WHERE d.datastore_id = %s"
        " ORDER BY d.external_id, c.chunk_index"
    ).format(sql.Identifier(partition_name(datastore_id)))
    # Every column NOT NULL and of the type its field names: rows map onto ExportRow.
    with conn.cursor(name="datastore_export", row_factory=class_row(ExportRow)) as cur:
        cur.itersize = _FETCH_ROWS
        cur.execute(query, (datastore_id,))
        yield from cur
