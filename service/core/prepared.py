"""Documents between validation and storage: their content hash and prepared chunks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from service.models import (
    Datastore,
    DocumentInput,
    DocumentResult,
    IngestStatus,
    JsonObject,
    PreparedChunk,
    Vector,
)
from service.storage import documents as rows


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


def unchanged_result(
    doc: DocumentInput, sha256: str, stored: dict[str, rows.StoredVersion]
) -> DocumentResult | None:
    """UNCHANGED with the stored document's id and chunk count when its hash matches."""
    found = stored.get(doc.external_id)
    if found is None or found.content_sha256 != sha256:
        return None
    return DocumentResult(
        doc.external_id, IngestStatus.UNCHANGED, found.document_id, found.chunk_count
    )


@dataclass
class PreparedPiece:
    content: str
    token_count: int
    metadata: JsonObject
    vector: Vector | None  # None until embedded


@dataclass
class PreparedDocument:
    """A validated document, its content hash and its chunks (vectors filled by ``embed``)."""

    doc: DocumentInput
    sha256: str
    pieces: list[PreparedPiece]

    @property
    def size(self) -> int:
        """Characters held: the text plus every chunk's content."""
        return len(self.doc.text) + sum(len(p.content) for p in self.pieces)

    def chunks(self) -> list[PreparedChunk]:
        out = []
        for i, p in enumerate(self.pieces):
            assert p.vector is not None
            out.append(PreparedChunk(i, p.content, p.vector, p.token_count, p.metadata))
        return out
