"""Document ingestion: validate, skip unchanged (content hash), chunk, embed, write atomically."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from service.core import access
from service.core.chunking import chunk_text
from service.core.validation import check_text, check_vector
from service.embedding.worker import EmbeddingWorker
from service.errors import InvalidArgument, NotFound, ResourceExhausted
from service.models import (
    NO_MODEL,
    Datastore,
    Document,
    DocumentInput,
    DocumentResult,
    IngestStatus,
    JsonObject,
    Page,
    PreparedChunk,
    Principal,
    StoredChunk,
    Vector,
)
from service.settings import Settings
from service.storage import datastores as datastore_rows
from service.storage import documents as rows
from service.storage.database import Database
from service.storage.pagination import page_size

MAX_EXTERNAL_ID_CHARS = 1024


def content_sha256(doc: DocumentInput, datastore: Datastore) -> str:
    """Hash of everything that shapes the stored chunks, so a change of any re-embeds."""
    config = datastore.config
    payload = {
        "title": doc.title,
        "source": doc.source,
        "text": doc.text,
        "metadata": doc.metadata,
        "chunks": [
            {
                "content": c.content,
                "metadata": c.metadata,
                "vector": None if c.vector is None else c.vector.tobytes().hex(),
            }
            for c in doc.chunks
        ],
        "model": config.embedding_model,
        "chunking": [config.chunk_size, config.chunk_overlap],
    }
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass
class _Piece:
    content: str
    token_count: int
    metadata: JsonObject
    vector: Vector | None  # None until embedded


@dataclass
class _Pending:
    doc: DocumentInput
    sha256: str
    pieces: list[_Piece]

    def chunks(self) -> list[PreparedChunk]:
        out = []
        for i, p in enumerate(self.pieces):
            assert p.vector is not None
            out.append(PreparedChunk(i, p.content, p.vector, p.token_count, p.metadata))
        return out


class Ingestion:
    def __init__(self, db: Database, embeddings: EmbeddingWorker, settings: Settings) -> None:
        self._db = db
        self._embeddings = embeddings
        self._settings = settings

    def datastore_for_write(self, principal: Principal, datastore_id: UUID) -> Datastore:
        with self._db.connection() as conn:
            datastore = datastore_rows.get(conn, datastore_id)
        if datastore is None:
            raise NotFound(f"datastore {datastore_id} not found")
        access.check_datastore(principal, datastore)
        access.check_served(datastore)
        return datastore

    def ingest(
        self, principal: Principal, datastore_id: UUID, docs: Sequence[DocumentInput]
    ) -> list[DocumentResult]:
        """Ingest a batch all-or-nothing: any invalid document fails the whole request."""
        if not docs:
            raise InvalidArgument("documents must not be empty")
        if len(docs) > self._settings.max_documents_per_request:
            raise ResourceExhausted(
                f"at most {self._settings.max_documents_per_request} documents per request; "
                "send several requests or use StreamIngest"
            )
        datastore = self.datastore_for_write(principal, datastore_id)
        seen: set[str] = set()
        for i, doc in enumerate(docs):
            self.validate(doc, datastore, f"documents[{i}]")
            if doc.external_id in seen:
                raise InvalidArgument(f"documents[{i}].external_id {doc.external_id!r} is repeated")
            seen.add(doc.external_id)
        return self.write(datastore, docs)

    def validate(self, doc: DocumentInput, datastore: Datastore, where: str) -> None:
        """Raise InvalidArgument naming the field if ``doc`` cannot be stored as sent."""
        if not doc.external_id.strip():
            raise InvalidArgument(f"{where}.external_id is required")
        check_text(doc.external_id, f"{where}.external_id", max_chars=MAX_EXTERNAL_ID_CHARS)
        check_text(doc.title, f"{where}.title", max_chars=10_000)
        check_text(doc.source, f"{where}.source", max_chars=10_000)
        limit = self._settings.max_document_bytes
        check_text(doc.text, f"{where}.text", max_chars=limit)
        if "\\u0000" in json.dumps(doc.metadata):
            raise InvalidArgument(f"{where}.metadata contains a NUL character")
        if doc.text and doc.chunks:
            raise InvalidArgument(f"{where}: send either text or chunks, not both")
        byo = datastore.config.embedding_model == NO_MODEL
        if not doc.chunks:
            if not doc.text.strip():
                raise InvalidArgument(f"{where} has no text")
            if byo:
                raise InvalidArgument(
                    f"{where}: datastore {datastore.id} has embedding_model 'none'; send chunks "
                    "with vectors instead of text"
                )
        for j, chunk in enumerate(doc.chunks):
            at = f"{where}.chunks[{j}]"
            if not chunk.content.strip():
                raise InvalidArgument(f"{at}.content is empty")
            check_text(chunk.content, f"{at}.content", max_chars=limit)
            if chunk.vector is None:
                if byo:
                    raise InvalidArgument(f"{at}.vector is required (embedding_model is 'none')")
            else:
                check_vector(chunk.vector, datastore.config.dimensions, datastore.metric, at)

    def write(self, datastore: Datastore, docs: Sequence[DocumentInput]) -> list[DocumentResult]:
        """Store valid documents: unchanged ones skipped, the rest written in one transaction."""
        hashes = [content_sha256(d, datastore) for d in docs]
        with self._db.connection() as conn:
            existing = rows.content_hashes(conn, datastore.id, [d.external_id for d in docs])
        results: dict[str, DocumentResult] = {}
        pending = []
        for doc, sha in zip(docs, hashes, strict=True):
            if existing.get(doc.external_id) == sha:
                results[doc.external_id] = DocumentResult(doc.external_id, IngestStatus.UNCHANGED)
            else:
                pending.append(self._prepare(doc, sha, datastore))
        if pending:
            self._embed(pending, datastore)
            with self._db.connection() as conn:
                # FOR SHARE: a concurrent delete or index rebuild waits for this write.
                locked = conn.execute(
                    "SELECT 1 FROM public.datastores WHERE id = %s FOR SHARE", (datastore.id,)
                ).fetchone()
                if locked is None:
                    raise NotFound(f"datastore {datastore.id} was deleted")
                written = []
                for p in pending:
                    chunks = p.chunks()
                    doc_id, created = rows.upsert(conn, datastore.id, p.doc, p.sha256, len(chunks))
                    written.append((doc_id, chunks))
                    status = IngestStatus.CREATED if created else IngestStatus.UPDATED
                    results[p.doc.external_id] = DocumentResult(
                        p.doc.external_id, status, doc_id, len(chunks)
                    )
                rows.replace_chunks(conn, datastore.id, written)
        return [results[d.external_id] for d in docs]

    def _prepare(self, doc: DocumentInput, sha: str, datastore: Datastore) -> _Pending:
        if doc.chunks:
            pieces = [_Piece(c.content, 0, c.metadata, c.vector) for c in doc.chunks]
            return _Pending(doc, sha, pieces)
        config = datastore.config
        model = self._embeddings.registry.get(config.embedding_model)
        windows = chunk_text(
            doc.text,
            model.token_offsets(doc.text),
            chunk_size=config.chunk_size,
            overlap=config.chunk_overlap,
        )
        if not windows:
            raise InvalidArgument(f"document {doc.external_id!r} has no text the model can read")
        return _Pending(doc, sha, [_Piece(w.content, w.token_count, {}, None) for w in windows])

    def _embed(self, pending: list[_Pending], datastore: Datastore) -> None:
        """One embedding call for every chunk of the batch that has no vector yet."""
        missing = [piece for p in pending for piece in p.pieces if piece.vector is None]
        if not missing:
            return
        vectors = self._embeddings.embed(
            datastore.config.embedding_model, [piece.content for piece in missing]
        )
        for piece, vector in zip(missing, vectors, strict=True):
            piece.vector = vector

    # ------------------------------------------------------------ reads and deletes

    def get(
        self, principal: Principal, datastore_id: UUID, external_id: str, with_chunks: bool
    ) -> tuple[Document, list[StoredChunk]]:
        self._readable(principal, datastore_id)
        with self._db.connection() as conn:
            doc = rows.get(conn, datastore_id, external_id)
            if doc is None:
                raise NotFound(f"document {external_id!r} not found in datastore {datastore_id}")
            chunks = rows.chunks(conn, datastore_id, doc.id) if with_chunks else []
        return doc, chunks

    def list_page(
        self, principal: Principal, datastore_id: UUID, size: int, token: str
    ) -> Page[Document]:
        self._readable(principal, datastore_id)
        with self._db.connection() as conn:
            return rows.list_page(conn, datastore_id, page_size(size), token)

    def delete(
        self, principal: Principal, datastore_id: UUID, external_ids: Sequence[str]
    ) -> tuple[int, list[str]]:
        if not external_ids:
            raise InvalidArgument("external_ids must not be empty")
        self.datastore_for_write(principal, datastore_id)
        with self._db.connection() as conn:
            deleted = rows.delete(conn, datastore_id, external_ids)
        gone = set(deleted)
        return len(deleted), [e for e in dict.fromkeys(external_ids) if e not in gone]

    def _readable(self, principal: Principal, datastore_id: UUID) -> Datastore:
        with self._db.connection() as conn:
            datastore = datastore_rows.get(conn, datastore_id)
        if datastore is None:
            raise NotFound(f"datastore {datastore_id} not found")
        access.check_datastore(principal, datastore)
        return datastore
