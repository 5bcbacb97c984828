"""Transport-neutral value types shared by the core, storage and API layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar
from uuid import UUID

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
JsonObject = dict[str, Any]
T = TypeVar("T")


class Metric(StrEnum):
    """Similarity metrics; values are Agentopia's text values (plus our ``manhattan``)."""

    COSINE = "cosine"
    EUCLIDEAN = "euclidean"
    DOT = "dot"
    MANHATTAN = "manhattan"


class SearchMode(StrEnum):
    VECTOR = "vector"
    HYBRID = "hybrid"
    KEYWORD = "keyword"


class VectorPrecision(StrEnum):
    """The precision of a datastore's HNSW index. The stored vectors stay float32 either
    way: ``float16`` indexes ``embedding::halfvec(D)`` (half the index size) and scores
    the candidates it finds on the stored float32 vectors (docs/scale.md)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


class Role(StrEnum):
    USER = "user"
    SERVICE = "service"


class IngestStatus(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


SERVED_DATASTORE_TYPE = "pgvector"
KNOWN_DATASTORE_TYPES = ("pgvector", "pinecone", "getzep")
NO_MODEL = "none"
DEFAULT_TEXT_SEARCH_CONFIG = "english"
DEFAULT_RRF_K = 60
DEFAULT_BM25_K1 = 1.2
DEFAULT_BM25_B = 0.75


@dataclass(frozen=True)
class Principal:
    """Who is calling: the owner of the API key and its role."""

    user_id: UUID
    role: Role
    key_id: UUID | None = None

    @property
    def is_service(self) -> bool:
        return self.role is Role.SERVICE


@dataclass(frozen=True)
class HnswParams:
    m: int
    ef_construction: int
    ef_search: int


@dataclass(frozen=True)
class DatastoreConfig:
    """The datastore's retrieval settings, stored in ``datastores.config``."""

    embedding_model: str
    dimensions: int
    chunk_size: int
    chunk_overlap: int
    search_mode: SearchMode
    hnsw: HnswParams
    low_confidence_fallback: bool = True
    # Keyword and hybrid search: the PostgreSQL text search configuration of the
    # chunks' tsvector, the Reciprocal Rank Fusion constant and the BM25 parameters.
    text_search_config: str = DEFAULT_TEXT_SEARCH_CONFIG
    rrf_k: int = DEFAULT_RRF_K
    bm25_k1: float = DEFAULT_BM25_K1
    bm25_b: float = DEFAULT_BM25_B
    vector_precision: VectorPrecision = VectorPrecision.FLOAT32

    def to_json(self) -> JsonObject:
        return {
            "embedding_model": self.embedding_model,
            "dimensions": self.dimensions,
            "chunk_size": self.chunk_size,
            "chunk_overlap": self.chunk_overlap,
            "search_mode": self.search_mode.value,
            "hnsw": {
                "m": self.hnsw.m,
                "ef_construction": self.hnsw.ef_construction,
                "ef_search": self.hnsw.ef_search,
            },
            "low_confidence_fallback": self.low_confidence_fallback,
            "text_search_config": self.text_search_config,
            "rrf_k": self.rrf_k,
            "bm25": {"k1": self.bm25_k1, "b": self.bm25_b},
            "vector_precision": self.vector_precision.value,
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> DatastoreConfig:
        hnsw = data.get("hnsw") or {}
        bm25 = data.get("bm25") or {}
        return cls(
            embedding_model=str(data.get("embedding_model", "")),
            dimensions=int(data.get("dimensions", 0)),
            chunk_size=int(data.get("chunk_size", 0)),
            chunk_overlap=int(data.get("chunk_overlap", 0)),
            search_mode=SearchMode(data.get("search_mode", SearchMode.VECTOR.value)),
            hnsw=HnswParams(
                m=int(hnsw.get("m", 16)),
                ef_construction=int(hnsw.get("ef_construction", 64)),
                ef_search=int(hnsw.get("ef_search", 100)),
            ),
            low_confidence_fallback=bool(data.get("low_confidence_fallback", True)),
            text_search_config=str(data.get("text_search_config", DEFAULT_TEXT_SEARCH_CONFIG)),
            rrf_k=int(data.get("rrf_k", DEFAULT_RRF_K)),
            bm25_k1=float(bm25.get("k1", DEFAULT_BM25_K1)),
            bm25_b=float(bm25.get("b", DEFAULT_BM25_B)),
            # Absent from configs stored before the field existed: their index is float32.
            vector_precision=VectorPrecision(
                data.get("vector_precision", VectorPrecision.FLOAT32.value)
            ),
        )


@dataclass(frozen=True)
class Datastore:
    id: UUID
    user_id: UUID
    name: str
    description: str
    type: str
    config: DatastoreConfig
    metric: Metric
    similarity_threshold: float
    max_results: int
    created_at: datetime
    updated_at: datetime
    document_count: int = 0
    chunk_count: int = 0
    reembed: ReembedStatus | None = None  # the latest re-embedding job, when asked for


@dataclass(frozen=True)
class ReembedStatus:
    """A datastore's latest re-embedding job (see service/core/reembedding.py)."""

    state: str  # copying | indexing | switching | done | failed | cancelled
    chunks_done: int
    chunks_total: int
    target_model: str
    target_dimensions: int
    source_model: str
    source_dimensions: int
    error: str = ""

    @property
    def running(self) -> bool:
        return self.state in RUNNING_REEMBED_STATES


RUNNING_REEMBED_STATES = ("copying", "indexing", "switching")


@dataclass(frozen=True)
class Agent:
    id: UUID
    user_id: UUID
    name: str
    description: str
    system_instructions: str
    assistant_instructions: str
    active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AgentDatastoreLink:
    id: UUID
    agent_id: UUID
    datastore_id: UUID
    created_at: datetime


@dataclass(frozen=True)
class ChunkInput:
    content: str
    vector: Vector | None = None
    metadata: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class DocumentInput:
    external_id: str
    title: str = ""
    source: str = ""
    text: str = ""
    chunks: tuple[ChunkInput, ...] = ()
    metadata: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk ready to be written: content, embedding and token count."""

    chunk_index: int
    content: str
    embedding: Vector
    token_count: int
    metadata: JsonObject


@dataclass(frozen=True)
class DocumentResult:
    external_id: str
    status: IngestStatus
    document_id: UUID | None = None
    chunk_count: int = 0
    error: str = ""
    # Opaque read-your-writes token (storage/replicas.py); "" without read replicas.
    consistency_token: str = ""


@dataclass(frozen=True)
class Document:
    id: UUID
    datastore_id: UUID
    external_id: str
    title: str
    source: str
    content_sha256: str
    metadata: JsonObject
    chunk_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StoredChunk:
    id: int
    chunk_index: int
    content: str
    metadata: JsonObject
    token_count: int


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str = ""


@dataclass(frozen=True)
class QuerySpec:
    """A retrieval request after validation, before datastores are resolved."""

    datastore_ids: tuple[UUID, ...] = ()
    agent_id: UUID | None = None
    text: str | None = None
    vector: Vector | None = None
    max_results: int | None = None
    similarity_threshold: float | None = None
    mode: SearchMode | None = None
    distinct_documents: bool = False
    exact: bool = False
    # The metadata filter as sent (JSON); validated by the core.
    filter: JsonObject | None = None
    # From an ingest response: only a replica that has replayed that write may answer.
    consistency_token: str = ""


@dataclass(frozen=True)
class Hit:
    datastore_id: UUID
    document_id: UUID
    external_id: str
    chunk_id: int
    chunk_index: int
    title: str
    content: str
    metadata: JsonObject
    score: float
    distance: float
    below_threshold: bool = False
    # Hybrid and keyword modes: the hit's vector score (also what the threshold
    # applies to) and its BM25 score; ``score`` is then the fused (or BM25) score.
    vector_score: float | None = None
    keyword_score: float | None = None


@dataclass(frozen=True)
class DatastoreReport:
    """What a query did with one datastore. A skipped one (an agent's link the service
    does not serve) carries only its id and ``skipped_reason``, none of its settings."""

    datastore_id: UUID
    metric: Metric | None
    similarity_threshold: float
    max_results: int
    hit_count: int
    fallback: bool
    mode: SearchMode | None = SearchMode.VECTOR
    skipped_reason: str = ""

    @classmethod
    def skipped(cls, datastore_id: UUID, reason: str) -> DatastoreReport:
        return cls(datastore_id, None, 0.0, 0, 0, False, None, reason)


@dataclass(frozen=True)
class QueryResult:
    hits: list[Hit]
    reports: list[DatastoreReport]
    truncated: bool = False  # hits past the response's byte budget were cut
