"""Portable per-datastore export and import: JSON lines with vectors.

The first line holds the datastore's settings; every further line is one document
with its chunks, their metadata and vectors. Export reads one snapshot through a
server-side cursor and import writes in bounded batches, so memory stays bounded
by a batch whatever the datastore's size. Imported chunks keep their vectors (no
re-embedding), so a datastore answers the same queries with the same scores.

Also read: a Pinecone-shaped dump (one ``{"id", "values", "metadata"}`` record per
line) into a bring-your-own-vectors datastore.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import Any, TextIO
from uuid import UUID

import numpy as np

from service.core.datastore_config import ConfigRequest
from service.core.datastores import DatastoreFields, Datastores
from service.core.ingestion import Ingestion
from service.errors import FailedPrecondition, InvalidArgument, NotFound
from service.models import (
    NO_MODEL,
    SERVED_DATASTORE_TYPE,
    ChunkInput,
    Datastore,
    DatastoreConfig,
    DocumentInput,
    Metric,
    Principal,
    Role,
)
from service.storage import datastores as datastore_rows
from service.storage import users
from service.storage.database import Database
from service.storage.transfer import ExportRow, export_rows

FORMAT = "agentopia-retrieval-datastore"
VERSION = 1
_BATCH_DOCUMENTS = 64
_BATCH_CHARS = 4_000_000  # text held by one import batch (vectors: about as much again)


@dataclass(frozen=True)
class Transferred:
    datastore: Datastore
    documents: int
    chunks: int


def export_datastore(db: Database, datastore_id: UUID, out: TextIO) -> Transferred:
    """Write the datastore as JSON lines to ``out``."""
    with db.connection() as conn:
        datastore = datastore_rows.get(conn, datastore_id)
    if datastore is None:
        raise NotFound(f"datastore {datastore_id} not found")
    if datastore.type != SERVED_DATASTORE_TYPE:
        raise FailedPrecondition(f"datastore {datastore_id} is not a {SERVED_DATASTORE_TYPE!r} one")
    out.write(_dumps(_header(datastore)))
    documents = chunks = 0
    with db.connection() as conn:
        for external_id, group in groupby(export_rows(conn, datastore_id), lambda r: r.external_id):
            line = _document_line(external_id, list(group))
            out.write(_dumps(line))
            documents += 1
            chunks += len(line["chunks"])
    return Transferred(datastore, documents, chunks)


def _header(d: Datastore) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "datastore": {
            "name": d.name,
            "description": d.description,
            "similarity_metric": d.metric.value,
            "similarity_threshold": d.similarity_threshold,
            "max_results": d.max_results,
            "config": d.config.to_json(),
        },
    }


def _document_line(external_id: str, rows: list[ExportRow]) -> dict[str, Any]:
    first = rows[0]
    return {
        "external_id": external_id,
        "title": first.title,
        "source": first.source,
        "metadata": first.document_metadata,
        "chunks": [
            {
                "content": r.content,
                "metadata": r.chunk_metadata,
                "token_count": r.token_count,
                # float32 -> float -> JSON -> float32 gives back the same bits
                "vector": [float(x) for x in np.asarray(r.vector, dtype=np.float32)],
            }
            for r in rows
        ],
    }


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"


def owner(db: Database, user_id: UUID) -> Principal:
    """The principal an import acts as: the new datastore's owner (NotFound if unknown)."""
    with db.connection() as conn:
        if not users.user_exists(conn, user_id):
            raise NotFound(f"no user {user_id}")
    return Principal(user_id, Role.USER)


class Importer:
    """Creates a datastore for ``principal`` and fills it from JSON lines."""

    def __init__(self, datastores: Datastores, ingestion: Ingestion, principal: Principal) -> None:
        self._datastores = datastores
        self._ingestion = ingestion
        self._principal = principal

    def import_export(self, lines: Iterable[str], name: str = "") -> Transferred:
        """Import a file written by :func:`export_datastore`."""
        numbered = _records(lines)
        header = next(numbered, None)
        if header is None or header[1].get("format") != FORMAT:
            raise InvalidArgument(f"the first line is not a {FORMAT!r} header")
        if header[1].get("version") != VERSION:
            raise InvalidArgument(f"unsupported {FORMAT} version {header[1].get('version')!r}")
        settings = header[1].get("datastore") or {}
        config = DatastoreConfig.from_json(settings.get("config") or {})
        datastore = self._datastores.create(
            self._principal,
            DatastoreFields(
                name=name or str(settings.get("name", "")),
                description=str(settings.get("description", "")),
                metric=Metric(settings.get("similarity_metric", Metric.COSINE.value)),
                similarity_threshold=float(settings.get("similarity_threshold", 0.0)),
                max_results=int(settings.get("max_results", 0)) or None,
                config=ConfigRequest.of(config),
            ),
        )
        docs = (_exported_document(n, record) for n, record in numbered)
        return self._fill(datastore, docs)

    def import_pinecone(
        self, lines: Iterable[str], name: str, metric: Metric, text_field: str = "text"
    ) -> Transferred:
        """Import ``{"id", "values", "metadata"}`` records into a new datastore with
        embedding_model 'none'; a chunk's content is ``metadata[text_field]`` (else the id)."""
        numbered = _records(lines)
        first = next(numbered, None)
        if first is None:
            raise InvalidArgument("the dump is empty")
        dimensions = len(first[1].get("values") or [])
        datastore = self._datastores.create(
            self._principal,
            DatastoreFields(
                name=name or "pinecone-import",
                metric=metric,
                config=ConfigRequest({"embedding_model": NO_MODEL, "dimensions": dimensions}),
            ),
        )
        records = _chain(first, numbered)
        docs = (_pinecone_document(n, record, text_field) for n, record in records)
        return self._fill(datastore, docs)

    def _fill(self, datastore: Datastore, docs: Iterable[tuple[str, DocumentInput]]) -> Transferred:
        batch: dict[str, DocumentInput] = {}
        held = documents = chunks = 0
        for where, doc in docs:
            self._ingestion.validate(doc, datastore, where)
            if doc.external_id in batch or len(batch) >= _BATCH_DOCUMENTS or held > _BATCH_CHARS:
                self._ingestion.write(datastore, list(batch.values()))
                batch, held = {}, 0
            batch[doc.external_id] = doc
            held += sum(len(c.content) for c in doc.chunks)
            documents += 1
            chunks += len(doc.chunks)
        if batch:
            self._ingestion.write(datastore, list(batch.values()))
        return Transferred(datastore, documents, chunks)


def _records(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise InvalidArgument(f"line {n} is not JSON: {e}") from e
        if not isinstance(record, dict):
            raise InvalidArgument(f"line {n} is not a JSON object")
        yield n, record


def _chain(
    first: tuple[int, dict[str, Any]], rest: Iterator[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    yield first
    yield from rest


def _vector(values: object, where: str) -> np.ndarray:
    if not isinstance(values, list) or not all(
        isinstance(x, int | float) and math.isfinite(x) for x in values
    ):
        raise InvalidArgument(f"{where}: the vector must be a list of finite numbers")
    return np.asarray(values, dtype=np.float32)


def _exported_document(n: int, record: dict[str, Any]) -> tuple[str, DocumentInput]:
    where = f"line {n}"
    chunks = tuple(
        ChunkInput(
            content=str(c.get("content", "")),
            vector=_vector(c.get("vector"), f"{where} chunk {i}"),
            metadata=c.get("metadata") or {},
        )
        for i, c in enumerate(record.get("chunks") or [])
    )
    if not chunks:
        raise InvalidArgument(f"{where}: a document needs at least one chunk")
    doc = DocumentInput(
        external_id=str(record.get("external_id", "")),
        title=str(record.get("title", "")),
        source=str(record.get("source", "")),
        chunks=chunks,
        metadata=record.get("metadata") or {},
    )
    return where, doc


def _pinecone_document(
    n: int, record: dict[str, Any], text_field: str
) -> tuple[str, DocumentInput]:
    where = f"line {n}"
    metadata = dict(record.get("metadata") or {})
    identifier = str(record.get("id", ""))
    text = metadata.pop(text_field, None)
    content = text if isinstance(text, str) and text.strip() else identifier
    chunk = ChunkInput(content=content, vector=_vector(record.get("values"), where))
    return where, DocumentInput(external_id=identifier, chunks=(chunk,), metadata=metadata)
