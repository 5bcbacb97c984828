"""RPC shortcuts: datastores, ingestion and queries in a line, and a failed call's status."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2

from service.client import Client, pb
from service.core.stream_ingest import THREAD_PREFIX


def vector_datastore(
    client: Client,
    metric: int = pb.COSINE,
    dimensions: int = 8,
    *,
    threshold: float = 0.0,
    max_results: int = 10,
    fallback: bool = True,
) -> pb.Datastore:
    """A bring-your-own-vectors datastore (embedding_model 'none')."""
    return client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name="vectors",
            similarity_metric=metric,  # type: ignore[arg-type]
            similarity_threshold=threshold,
            max_results=max_results,
            config=pb.DatastoreConfig(
                embedding_model="none",
                dimensions=dimensions,
                low_confidence_fallback=fallback,
            ),
        )
    )


def ingest_vectors(
    client: Client, datastore_id: str, vectors: np.ndarray, prefix: str = "v"
) -> None:
    """One single-chunk document per row, external_id ``{prefix}{row}``."""
    docs = [
        pb.DocumentInput(
            external_id=f"{prefix}{i}",
            chunks=[pb.ChunkInput(content=f"chunk {i}", vector=[float(x) for x in v])],
        )
        for i, v in enumerate(vectors)
    ]
    for start in range(0, len(docs), 500):
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=datastore_id, documents=docs[start : start + 500]
            )
        )


def query_vector(
    client: Client, datastore_ids: list[str], vector: list[float], **kwargs: object
) -> pb.QueryResponse:
    return client.retrieval.Query(
        pb.QueryRequest(
            datastores=pb.DatastoreIds(ids=datastore_ids),
            vector=pb.QueryVector(values=vector),
            **kwargs,  # type: ignore[arg-type]
        )
    )


def status_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """Run an RPC expected to fail; return its status code and details."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    return err.code(), err.details() or ""


def text_datastore(
    client: Client,
    name: str = "texts",
    *,
    threshold: float = 0.0,
    max_results: int | None = None,
    **config: int,
) -> pb.Datastore:
    """A datastore the bundled model embeds; ``config`` sets DatastoreConfig fields
    (chunk_size, chunk_overlap, ...)."""
    request = pb.CreateDatastoreRequest(name=name, similarity_threshold=threshold)
    for field, value in config.items():
        setattr(request.config, field, value)
    if max_results is not None:
        request.max_results = max_results
    return client.datastores.CreateDatastore(request)


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A JSON object as a protobuf Struct (metadata, filters)."""
    out = struct_pb2.Struct()
    out.update(value)
    return out


def stream_ingest_threads() -> list[threading.Thread]:
    """The pipeline threads of this process's StreamIngest calls still running (their
    names are the only way to tell them from the server's other threads)."""
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
