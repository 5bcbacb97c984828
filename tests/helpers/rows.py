"""What a datastore holds, read from its tables: the row counts the tests assert on."""

from __future__ import annotations

from typing import NamedTuple
from uuid import UUID

from service.app import App


class RowCounts(NamedTuple):
    documents: int
    chunks: int  # chunk rows
    declared_chunks: int  # the sum of the documents' chunk_count
    duplicates: int  # document rows beyond the first for an external id
    orphans: int  # chunk rows whose document is gone
    partial: int  # documents whose chunk rows differ from their chunk_count

    @property
    def stored(self) -> tuple[int, int, int]:
        """(documents, chunk rows, declared chunks)."""
        return self.documents, self.chunks, self.declared_chunks


def row_counts(app: App, datastore_id: str | UUID) -> RowCounts:
    """The datastore's row counts, in one statement (one snapshot)."""
    with app.db.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM datastore_documents WHERE datastore_id = %(d)s),"
            " (SELECT count(*) FROM datastore_chunks WHERE datastore_id = %(d)s),"
            " (SELECT coalesce(sum(chunk_count), 0) FROM datastore_documents"
            "  WHERE datastore_id = %(d)s),"
            " (SELECT count(*) - count(DISTINCT external_id) FROM datastore_documents"
            "  WHERE datastore_id = %(d)s),"
            " (SELECT count(*) FROM datastore_chunks c WHERE c.datastore_id = %(d)s AND NOT"
            "  EXISTS (SELECT 1 FROM datastore_documents d WHERE d.id = c.document_id)),"
            " (SELECT count(*) FROM datastore_documents d WHERE d.datastore_id = %(d)s AND"
            "  d.chunk_count <> (SELECT count(*) FROM datastore_chunks c"
            "  WHERE c.datastore_id = %(d)s AND c.document_id = d.id))",
            {"d": str(datastore_id)},
        ).fetchone()
    assert row is not None
    return RowCounts(*(int(v) for v in row))
