"""Transport-neutral value types shared by the core, storage and API layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar
from uuid import UUID

import numpy as np
import numpy.typing as npt

from service import config_fields
from service.config_fields import config_field, config_group

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
    way: ``float16`` indexes ``embedding::halfvec(D)`` (about half the index size) and
    scores the candidates it finds on the stored float32 vectors (docs/scale.md)."""

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
    """The datastore's HNSW index (m, ef_construction) and search (ef_search) settings."""

    m: int = config_field(
        16,
        minimum=2,
        maximum=100,
        setting="hnsw_m",
        fixed_while_reembedding=True,
        doc="HNSW graph degree; a change rebuilds the index.",
    )
    # At least 2 * m (pgvector's rule), checked by the core beside the maximum.
    ef_construction: int = config_field(
        64,
        maximum=1000,
        setting="hnsw_ef_construction",
        fixed_while_reembedding=True,
        doc="HNSW build candidate list, at least 2 * m; a change rebuilds the index.",
    )
    ef_search: int = config_field(
        100,
        minimum=1,
        maximum=1000,
        setting="hnsw_ef_search",
        doc="HNSW search candidate list: at query time the server uses max(ef_search, k), "
        "at most 1,000. Applies to the next query. Recall@10 at 100: 0.987 at 100k chunks, "
        "0.93-0.95 at 1M; set 200 past a few hundred thousand chunks "
        "([scale.md](scale.md#one-million-chunks-ef_search-200-and-the-index-in-shared_buffers)).",
    )
    # pgvector's hnsw.max_scan_tuples for filtered (iterative) scans; 0: the server's rule.
    iterative_scan_max_tuples: int = config_field(
        0,
        minimum=0,
        maximum=2**31 - 1,
        doc="pgvector's hnsw.max_scan_tuples for filtered searches: how many index tuples the "
        "iterative HNSW scan visits before an exact search takes over.",
        default_doc="`0`: a tenth of the datastore's chunks, at least 2,000, at most 100,000",
    )


@dataclass(frozen=True)
class DatastoreConfig:
    """The datastore's retrieval settings, stored in ``datastores.config``.

    Each field is defined here once; its JSON key, update-mask path, default, limits,
    protobuf conversion and documentation derive from this declaration (see
    service/config_fields.py).
    """

    # "" / 0: derived when a datastore is created (the server's model, its dimensions,
    # its window); the core checks these four itself.
    embedding_model: str = config_field(
        "",
        doc="`sentence-transformers/all-MiniLM-L6-v2` or `all-MiniLM-L6-v2` (the bundled "
        "model, 384 dims, 254-token window), a name the operator configured in "
        "`RETRIEVAL_MODELS` (name -> local folder with `config.json`, loaded from local "
        "files only), or `none` (caller-supplied vectors). Anything else, a filesystem path "
        "included, is INVALID_ARGUMENT listing the names offered (no path from a request is "
        "ever looked at; nothing is downloaded); a configured folder that fails to load, or "
        "a name no longer configured: FAILED_PRECONDITION. Changing it on a datastore that "
        "holds chunks starts a re-embedding job.",
        default_doc="`RETRIEVAL_DEFAULT_EMBEDDING_MODEL`",
    )
    dimensions: int = config_field(
        0,
        doc="With a model: 0 or equal to the model's dimension; with `none`: required, > 0; "
        "always 1..16,000. A change rebuilds the index.",
        default_doc="the model's",
    )
    chunk_size: int = config_field(
        0,
        fixed_while_reembedding=True,
        doc="Chunk length in model tokens: 8..the model's window (its `max_seq_length` - 2); "
        "with `none` the upper bound is `RETRIEVAL_DEFAULT_CHUNK_SIZE`.",
        default_doc="min(`RETRIEVAL_DEFAULT_CHUNK_SIZE`, the model's window)",
    )
    chunk_overlap: int = config_field(
        0,
        optional=True,
        fixed_while_reembedding=True,
        doc="Tokens shared by neighbouring chunks: 0 ≤ overlap < `chunk_size`.",
        default_doc="min(`RETRIEVAL_DEFAULT_CHUNK_OVERLAP`, `chunk_size` // 4)",
    )
    search_mode: SearchMode = config_field(
        SearchMode.VECTOR,
        doc="The mode of a query that names none ([search.md](search.md)).",
    )
    hnsw: HnswParams = config_group(HnswParams)
    low_confidence_fallback: bool = config_field(
        True,
        optional=True,
        doc="When no datastore of a query has a passing hit, this one returns its best "
        "min(3, max_results) hits flagged `below_threshold`.",
    )
    # Keyword and hybrid search: the PostgreSQL text search configuration of the
    # chunks' tsvector, the Reciprocal Rank Fusion constant and the BM25 parameters.
    text_search_config: str = config_field(
        DEFAULT_TEXT_SEARCH_CONFIG,
        setting="default_text_search_config",
        fixed_while_reembedding=True,
        doc="The keyword index's text search configuration: a name in `pg_ts_config`, stored "
        "under its canonical name; a change rewrites the datastore's tsvectors.",
    )
    rrf_k: int = config_field(
        DEFAULT_RRF_K,
        minimum=1,
        maximum=10_000,
        doc="Reciprocal Rank Fusion constant of hybrid search.",
    )
    bm25_k1: float = config_field(
        DEFAULT_BM25_K1,
        minimum=0,
        maximum=10,
        json="bm25.k1",
        optional=True,
        doc="BM25 term-frequency saturation (stored as `bm25.k1`).",
    )
    bm25_b: float = config_field(
        DEFAULT_BM25_B,
        minimum=0,
        maximum=1,
        json="bm25.b",
        optional=True,
        doc="BM25 length normalisation (stored as `bm25.b`).",
    )
    # A stored config without it predates the field: its index is float32, whatever the
    # server's default for new datastores. Changing it rebuilds the index.
    vector_precision: VectorPrecision = config_field(
        VectorPrecision.FLOAT32,
        setting="default_vector_precision",
        fixed_while_reembedding=True,
        doc="`FLOAT32` or `FLOAT16`: the HNSW index's precision "
        "([scale.md](scale.md#vector-precision-halfvec)); scores always come from the "
        "stored float32 vectors. A change rebuilds the index.",
        default_doc="`RETRIEVAL_DEFAULT_VECTOR_PRECISION`; a stored config without it: `FLOAT32`",
    )

    def to_json(self) -> JsonObject:
        return config_fields.to_json(self)

    @classmethod
    def from_json(cls, data: JsonObject) -> DatastoreConfig:
        return config_fields.from_json(cls, data)


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
