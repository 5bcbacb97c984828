"""Service settings: environment variables prefixed ``RETRIEVAL_``, read once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class Settings(BaseSettings):
    """Every knob of the service. Build one at start-up and pass it down."""

    model_config = SettingsConfigDict(env_prefix="RETRIEVAL_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RETRIEVAL_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL (>= 15, pgvector >= 0.8) to use; unset = embedded server.",
    )
    data_dir: Path = Field(
        default=Path(".data"),
        description="Embedded database, API key file and model caches live here.",
    )
    host: str = Field(default="127.0.0.1", description="Address the gRPC server binds.")
    port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0 = any free).")
    grpc_workers: int = Field(
        default=64,
        ge=1,
        description="Threads that run calls, and so the most calls in flight (streams "
        "included): past it a call gets RESOURCE_EXHAUSTED at once, never a queue.",
    )
    max_calls_per_principal: int = Field(
        default=8,
        ge=1,
        description="Most calls in flight for one user credential's principal (service "
        "principals are bound by grpc_workers only): past it, RESOURCE_EXHAUSTED. Keep it "
        "below pool_max_size so one tenant cannot hold every database connection.",
    )
    stream_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A stream whose caller sends nothing for this long, while the server "
        "waits for its next message, ends with DEADLINE_EXCEEDED.",
    )
    stream_read_ahead_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Bytes of a stream's messages read but not yet processed, per stream.",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        gt=0,
        description="On SIGTERM: how long calls in flight may finish (streams commit the "
        "batch in hand) before the rest are cancelled.",
    )
    max_connection_idle_s: float = Field(
        default=300.0, gt=0, description="A connection with no call for this long is closed."
    )
    max_response_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="Byte budget of a Query response: hits past it are cut and the "
        "response says truncated = true.",
    )
    exact_max_chunks: int = Field(
        default=20_000,
        ge=0,
        description="Largest datastore (in chunks) a user may search with exact = true; "
        "service principals may search any. Larger: RESOURCE_EXHAUSTED.",
    )
    pool_min_size: int = Field(default=2, ge=1, description="Smallest connection pool size.")
    pool_max_size: int = Field(default=10, ge=1, description="Largest connection pool size.")
    pool_timeout_s: float = Field(
        default=10.0, gt=0, description="Wait for a free connection before UNAVAILABLE."
    )
    max_results_cap: int = Field(
        default=1000,
        ge=1,
        le=1000,
        description="Hard cap on max_results, per datastore and request (HNSW returns at most "
        "1,000 rows: ef_search's limit).",
    )
    default_similarity_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="similarity_threshold for new datastores."
    )
    default_max_results: int = Field(default=5, ge=1, description="max_results for new datastores.")
    default_embedding_model: str = Field(
        default=BUNDLED_MODEL, description="embedding_model for new datastores."
    )
    default_chunk_size: int = Field(default=200, ge=16, description="Chunk size in model tokens.")
    default_chunk_overlap: int = Field(default=40, ge=0, description="Chunk overlap in tokens.")
    hnsw_m: int = Field(default=16, ge=2, le=100, description="HNSW m for new datastores.")
    hnsw_ef_construction: int = Field(
        default=64, ge=4, le=1000, description="HNSW ef_construction for new datastores."
    )
    hnsw_ef_search: int = Field(
        default=100, ge=1, le=1000, description="HNSW ef_search for new datastores."
    )
    embedding_backend: Literal["onnx", "onnx-int8", "torch"] = Field(
        default="onnx",
        description="onnx: the model exported once into data_dir/models and run with "
        "onnxruntime (same quality, faster); onnx-int8: the same with int8 weights (faster "
        "still, slightly lower quality: docs/performance.md); torch: sentence-transformers.",
    )
    onnx_cache_dir: Path | None = Field(
        default=None, description="Where exported ONNX models are cached (default data_dir/models)."
    )
    embedding_threads: int = Field(
        default=0,
        ge=0,
        description="onnxruntime intra-op threads of a query run alone on an idle "
        "server (0 = one per core); runs on the lanes use one thread each.",
    )
    query_cache_size: int = Field(
        default=1024, ge=0, description="Query embeddings kept, over all models (LRU; 0 = off)."
    )
    default_text_search_config: str = Field(
        default="english",
        description="Text search configuration (pg_ts_config) of new datastores' keyword index.",
    )
    hybrid_candidates: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Least candidates each side (vector, keyword) gives a hybrid search.",
    )
    embed_lanes: int = Field(
        default=0,
        ge=0,
        description="Embedding runs side by side, one core each (0 = one per core).",
    )
    embed_batch_size: int = Field(
        default=16,
        ge=1,
        description="Texts per embedding run for ingestion: larger jobs are cut into "
        "slices of this size, spread over the lanes, with queries served between slices.",
    )
    embed_query_batch: int = Field(
        default=1,
        ge=1,
        description="Most concurrent queries embedded in one run (1 measured fastest on "
        "CPUs: see docs/performance.md).",
    )
    embed_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="How long a lane waits for more queries to fill embed_query_batch.",
    )
    max_documents_per_request: int = Field(
        default=1000, ge=1, description="Largest IngestDocuments batch."
    )
    max_document_chars: int = Field(
        default=2_000_000,
        ge=1,
        description="Largest document text accepted, in characters (a message must also fit "
        "max_message_bytes).",
    )
    max_message_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest gRPC message, in and out (larger: RESOURCE_EXHAUSTED).",
    )
    max_chunk_chars: int = Field(
        default=65_536, ge=1, description="Largest caller-supplied chunk content, in characters."
    )
    preload_models: list[str] = Field(
        default_factory=lambda: [BUNDLED_MODEL],
        description="Models loaded at start-up (health is SERVING only once they are).",
    )
    create_local_key: bool = Field(
        default=True,
        description="On a fresh data directory, create a local user and API key in data_dir.",
    )

    @model_validator(mode="after")
    def _check_hnsw(self) -> Settings:
        if self.hnsw_ef_construction < 2 * self.hnsw_m:
            raise ValueError("hnsw_ef_construction must be at least 2 * hnsw_m (pgvector's rule)")
        return self

    @property
    def api_key_file(self) -> Path:
        return self.data_dir / "api-key"

    @property
    def model_dir(self) -> Path:
        return self.onnx_cache_dir or self.data_dir / "models"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"
