"""Document ingestion: validate, skip unchanged (content hash), chunk, embed, write atomically.

Reading and deleting stored documents is ``core/documents.py``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from functools import partial
from uuid import UUID

from service import metrics
from service.core import access
from service.core.chunking import chunk_text
from service.core.prepared import (
    PreparedDocument,
    PreparedPiece,
    content_sha256,
    unchanged_result,
)
from service.core.validation import (
    MAX_EXTERNAL_ID_BYTES,
    check_metadata,
    check_text,
    check_vector,
)
from service.embedding.worker import EmbeddingWorker
from service.errors import (
    Aborted,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ModelSwitched,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from service.models import (
    NO_MODEL,
    Datastore,
    DocumentInput,
    DocumentResult,
    IngestStatus,
    Principal,
)
from service.settings import Settings
from service.storage import datastores as datastore_rows
from service.storage import documents as rows
from service.storage.database import Database
from service.storage.replicas import ReadPools

_log = logging.getLogger(__name__)


def _refused_by_database(external_id: str, error: Exception) -> DocumentResult:
    """The FAILED result of a document the database refused to store (and a log line)."""
    # Unavailable wraps the database's own message
    reason = error.__cause__ if isinstance(error, Unavailable) and error.__cause__ else error
    _log.info("document %r refused by the database: %s", external_id, reason)
    return DocumentResult(external_id, IngestStatus.FAILED, error=f"cannot store: {reason}")


def _check_unchanged(prepared_for: Datastore, locked: Datastore | None) -> None:
    """Raise unless the datastore, read again under its lock, still takes the vectors
    that were computed for it (an update may have committed since)."""
    if locked is None:
        raise NotFound(f"datastore {prepared_for.id} was deleted")
    before, now = prepared_for.config, locked.config
    if (before.embedding_model, before.dimensions) == (now.embedding_model, now.dimensions):
        return
    if NO_MODEL not in (before.embedding_model, now.embedding_model):
        # A re-embedding switched models: the same request sent again is embedded anew.
        raise ModelSwitched(
            f"datastore {prepared_for.id} switched to embedding model {now.embedding_model!r} "
            "while these documents were embedded; send them again"
        )
    # Caller-supplied vectors (model 'none' before or after): the same request cannot fit.
    raise FailedPrecondition(
        f"datastore {prepared_for.id} changed its embedding model or dimensions while "
        f"these documents were prepared (now {now.embedding_model!r}, {now.dimensions} "
        "dimensions); send them again"
    )


class Ingestion:
    def __init__(
        self,
        db: Database,
        embeddings: EmbeddingWorker,
        settings: Settings,
        reads: ReadPools | None = None,
    ) -> None:
        self._db = db
        self._reads = reads or ReadPools(db)  # the read-your-writes token
        self._embeddings = embeddings
        self._settings = settings

    def datastore_for_write(self, principal: Principal, datastore_id: UUID) -> Datastore:
        """The datastore, if the caller may write into it and this service serves it."""
        with self._db.connection() as conn:
            return access.datastore(
                principal, datastore_id, partial(datastore_rows.get, conn), served=True
            )

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
        datastore = self._validated(principal, datastore_id, docs)
        try:
            return self.write(datastore, docs)
        except ModelSwitched:
            # A re-embedding switched the model after these were embedded: once more.
            return self.write(self._validated(principal, datastore_id, docs), docs)

    def _validated(
        self, principal: Principal, datastore_id: UUID, docs: Sequence[DocumentInput]
    ) -> Datastore:
        datastore = self.datastore_for_write(principal, datastore_id)
        seen: set[str] = set()
        for i, doc in enumerate(docs):
            self.validate(doc, datastore, f"documents[{i}]")
            if doc.external_id in seen:
                raise InvalidArgument(f"documents[{i}].external_id {doc.external_id!r} is repeated")
            seen.add(doc.external_id)
        return datastore

    def validate(self, doc: DocumentInput, datastore: Datastore, where: str) -> None:
        """Raise InvalidArgument naming the field if ``doc`` cannot be stored as sent."""
        if not doc.external_id.strip():
            raise InvalidArgument(f"{where}.external_id is required")
        check_text(doc.external_id, f"{where}.external_id", max_bytes=MAX_EXTERNAL_ID_BYTES)
        check_text(doc.title, f"{where}.title", max_chars=10_000)
        check_text(doc.source, f"{where}.source", max_chars=10_000)
        limit = self._settings.max_document_chars
        check_text(doc.text, f"{where}.text", max_chars=limit)
        check_metadata(doc.metadata, f"{where}.metadata")
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
            check_text(chunk.content, f"{at}.content", max_chars=self._settings.max_chunk_chars)
            check_metadata(chunk.metadata, f"{at}.metadata")
            if chunk.vector is None:
                if byo:
                    raise InvalidArgument(f"{at}.vector is required (embedding_model is 'none')")
            else:
                check_vector(chunk.vector, datastore.config.dimensions, datastore.metric, at)

    def write(self, datastore: Datastore, docs: Sequence[DocumentInput]) -> list[DocumentResult]:
        """Store valid documents: unchanged ones skipped, the rest written in one transaction."""
        hashes = [content_sha256(d, datastore) for d in docs]
        existing = self.stored_versions(datastore, [d.external_id for d in docs])
        results: dict[str, DocumentResult] = {}
        pending = []
        for doc, sha in zip(docs, hashes, strict=True):
            if (unchanged := unchanged_result(doc, sha, existing)) is not None:
                results[doc.external_id] = unchanged
            else:
                pending.append(self.prepare(doc, datastore, sha))
        if pending:
            self.embed(pending, datastore)
            for result in self.store(datastore, pending):
                results[result.external_id] = result
        metrics.count_ingested(r.status for r in results.values())
        return self.with_token([results[d.external_id] for d in docs])

    def with_token(self, results: list[DocumentResult]) -> list[DocumentResult]:
        """``results`` stamped with a read-your-writes token, read after their commit."""
        token = self._reads.commit_token() if results else ""
        if not token:
            return results
        return [dataclasses.replace(r, consistency_token=token) for r in results]

    # ------------------------------------------------------------ write stages
    # ``write`` runs these in a row; StreamIngest runs them as a pipeline.

    def stored_versions(
        self, datastore: Datastore, external_ids: Sequence[str]
    ) -> dict[str, rows.StoredVersion]:
        """external_id -> its stored version, for the documents that exist."""
        if not external_ids:
            return {}
        with self._db.connection() as conn:
            return rows.stored_versions(conn, datastore.id, external_ids)

    def prepare(self, doc: DocumentInput, datastore: Datastore, sha256: str) -> PreparedDocument:
        """Chunk a validated document; raises InvalidArgument if the model reads no text."""
        if doc.chunks:
            pieces = [PreparedPiece(c.content, 0, c.metadata, c.vector) for c in doc.chunks]
            return PreparedDocument(doc, sha256, pieces)
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
        pieces = [PreparedPiece(w.content, w.token_count, {}, None) for w in windows]
        return PreparedDocument(doc, sha256, pieces)

    def embed(self, docs: Sequence[PreparedDocument], datastore: Datastore) -> None:
        """Embed every chunk of ``docs`` that has no vector yet, in one job: the
        embedding worker sorts it by length and spreads its slices over the lanes."""
        missing = [piece for p in docs for piece in p.pieces if piece.vector is None]
        if not missing:
            return
        model = datastore.config.embedding_model
        vectors = self._embeddings.embed(model, [piece.content for piece in missing])
        for piece, vector in zip(missing, vectors, strict=True):
            piece.vector = vector

    def store(self, datastore: Datastore, docs: Sequence[PreparedDocument]) -> list[DocumentResult]:
        """Write embedded documents in one transaction: all of them or none."""
        with self._db.connection() as conn:
            _check_unchanged(datastore, datastore_rows.lock_for_write(conn, datastore.id))
            ids: dict[str, tuple[UUID, bool]] = {}
            # Row locks in one order (by external_id) for every batch: two batches
            # that share documents wait for each other instead of deadlocking.
            for p in sorted(docs, key=lambda p: p.doc.external_id):
                ids[p.doc.external_id] = rows.upsert(
                    conn, datastore.id, p.doc, p.sha256, len(p.pieces)
                )
            results = {}
            for p in docs:
                doc_id, created = ids[p.doc.external_id]
                status = IngestStatus.CREATED if created else IngestStatus.UPDATED
                results[p.doc.external_id] = DocumentResult(
                    p.doc.external_id, status, doc_id, len(p.pieces)
                )
            # Chunks in request order: their ids (the tie-break between equal scores)
            # follow the order the caller sent.
            written = [(ids[p.doc.external_id][0], p.chunks()) for p in docs]
            rows.replace_chunks(conn, datastore.id, written)
        return [results[p.doc.external_id] for p in docs]

    def store_each(
        self, datastore: Datastore, docs: Sequence[PreparedDocument]
    ) -> list[DocumentResult]:
        """Like ``store``, but a document the database refuses fails alone.

        The batch is tried in one transaction; if that fails while the database
        is still reachable, each document is retried in its own transaction, so
        only the bad ones come back FAILED. A deleted datastore or an unreachable
        database still raises.
        """
        try:
            return self.store(datastore, docs)
        except Exception as e:
            self._raise_unless_refused(e)
            if len(docs) == 1:
                return [_refused_by_database(docs[0].doc.external_id, e)]
            _log.warning("batch of %d documents refused (%s); retrying one by one", len(docs), e)
        results = []
        for p in docs:
            try:
                results.extend(self.store(datastore, [p]))
            except Exception as e:
                self._raise_unless_refused(e)
                results.append(_refused_by_database(p.doc.external_id, e))
        return results

    def _raise_unless_refused(self, error: Exception) -> None:
        """Re-raise ``error`` unless the database is up and refused the data itself."""
        # A failure may be about the data (a constraint, a size limit) or about the
        # database (gone, restarting): a ping tells which one this is.
        # (Unavailable covers ModelSwitched; a real outage fails the ping anyway.)
        not_the_data = (NotFound, FailedPrecondition, Aborted, Cancelled, DeadlineExceeded)
        if isinstance(error, Unavailable):
            raise error
        if isinstance(error, not_the_data) or not self._db.ping():
            raise error
