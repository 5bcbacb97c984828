"""Stored documents: read one (with its chunks), list a datastore's, delete by external_id."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from uuid import UUID

from service.core import access
from service.core.validation import MAX_EXTERNAL_ID_BYTES, check_text
from service.errors import InvalidArgument, NotFound
from service.models import Datastore, Document, Page, Principal, StoredChunk
from service.settings import Settings
from service.storage import datastores as datastore_rows
from service.storage import documents as rows
from service.storage.database import Database
from service.storage.pagination import page_size
from service.storage.replicas import ReadPools


class Documents:
    """GetDocument, ListDocuments and DeleteDocuments; reads may go to a read replica."""

    def __init__(self, db: Database, settings: Settings, reads: ReadPools | None = None) -> None:
        self._db = db
        self._reads = reads or ReadPools(db)
        self._settings = settings

    def get(
        self, principal: Principal, datastore_id: UUID, external_id: str, with_chunks: bool
    ) -> tuple[Document, list[StoredChunk]]:
        """The document and, with ``with_chunks``, its chunks in order."""
        self._datastore(principal, datastore_id)
        check_text(external_id, "external_id", max_bytes=MAX_EXTERNAL_ID_BYTES)

        def read(db: Database) -> tuple[Document | None, list[StoredChunk]]:
            with db.connection() as conn:
                doc = rows.get(conn, datastore_id, external_id)
                if doc is None or not with_chunks:
                    return doc, []
                return doc, rows.chunks(conn, datastore_id, doc.id)

        doc, chunks = self._reads.run(read)
        if doc is None:
            raise NotFound(f"document {external_id!r} not found in datastore {datastore_id}")
        return doc, chunks

    def list_page(
        self, principal: Principal, datastore_id: UUID, size: int, token: str
    ) -> Page[Document]:
        self._datastore(principal, datastore_id)

        def read(db: Database) -> Page[Document]:
            with db.connection() as conn:
                return rows.list_page(conn, datastore_id, page_size(size), token)

        return self._reads.run(read)

    def delete(
        self, principal: Principal, datastore_id: UUID, external_ids: Sequence[str]
    ) -> tuple[int, list[str]]:
        """Delete documents with their chunks: (how many, the external_ids not found)."""
        if not external_ids:
            raise InvalidArgument("external_ids must not be empty")
        if len(external_ids) > self._settings.max_documents_per_request:
            raise InvalidArgument(
                f"external_ids: at most {self._settings.max_documents_per_request} per request"
            )
        for i, external_id in enumerate(external_ids):
            check_text(external_id, f"external_ids[{i}]", max_bytes=MAX_EXTERNAL_ID_BYTES)
        self._datastore(principal, datastore_id, served=True)
        with self._db.connection() as conn:
            deleted = rows.delete(conn, datastore_id, external_ids)
        gone = set(deleted)
        return len(deleted), [e for e in dict.fromkeys(external_ids) if e not in gone]

    def _datastore(
        self, principal: Principal, datastore_id: UUID, *, served: bool = False
    ) -> Datastore:
        with self._db.connection() as conn:
            return access.datastore(
                principal, datastore_id, partial(datastore_rows.get, conn), served=served
            )
