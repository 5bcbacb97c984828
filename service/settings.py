"""Service settings: environment variables prefixed ``RETRIEVAL_``, read once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator

from service.config_fields import leaf
from service.models import DatastoreConfig, VectorPrecision
from service.settings_auth import AuthSettings

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_MODEL_NAMES = (BUNDLED_MODEL, "all-MiniLM-L6-v2")
NO_MODEL_NAME = "none"  # bring-your-own vectors (service.models.NO_MODEL)


def _field(path: str, what: Literal["default", "minimum", "maximum"]) -> Any:
    """A datastore-config field's default or bound, from its one definition, for the
    setting that gives new datastores their default."""
    f = leaf(DatastoreConfig, path)
    return f.default if what == "default" else getattr(f.spec, what)


class Settings(AuthSettings):
    """Every knob of the service. Build one at start-up and pass it down."""

    # model_config (prefix, errors without values) comes from AuthSettings.

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
    http_enabled: bool = Field(
        default=True,
        description="Serve the same services over HTTP (Connect JSON/binary, gRPC-Web) plus "
        "/healthz, /readyz and /metrics on http_port, bound to host like gRPC; false = off.",
    )
    http_port: int = Field(
        default=8080, ge=0, le=65535, description="HTTP (Connect, gRPC-Web) port (0 = any free)."
    )
    http_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="An HTTP request's body must arrive within this many seconds "
        "(else DEADLINE_EXCEEDED); its size is bounded by max_message_bytes.",
    )
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
        "waits for its next message with nothing left to work on, ends with "
        "DEADLINE_EXCEEDED (time spent on what the caller sent never counts).",
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
    spare_partitions: int = Field(
        default=8,
        ge=0,
        le=1_000,
        description="Empty chunk partitions kept ready, made in the background, so that "
        "CreateDatastore runs no DDL on the shared chunks table (whose cost grows with the "
        "number of datastores). With none ready, CreateDatastore makes its own; 0: always.",
    )
    pool_min_size: int = Field(default=2, ge=1, description="Smallest connection pool size.")
    pool_max_size: int = Field(default=10, ge=1, description="Largest connection pool size.")
    pool_timeout_s: float = Field(
        default=10.0, gt=0, description="Wait for a free connection before UNAVAILABLE."
    )
    statement_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="Longest a database statement may run (PostgreSQL statement_timeout, set "
        "at connect). A call's own deadline, when shorter, cancels its statements sooner; "
        "either way the call ends DEADLINE_EXCEEDED. HNSW builds: index_build_timeout_s.",
    )
    database_probe_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="While the database is unreachable, how often it is probed; calls fail "
        "UNAVAILABLE at once in the meantime, and serving resumes on the first good probe.",
    )
    read_database_urls: list[str] = Field(
        default_factory=list,
        description="PostgreSQL streaming standbys of database_url (a JSON list of URLs) for "
        "queries, GetDocument and ListDocuments; writes, migrations, LISTEN and key look-ups "
        "stay on the primary. A replica down or lagging is skipped (docs/scale.md).",
    )
    max_replica_lag_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="A read replica whose replay trails the primary by more than this "
        "(measured by WAL position) is skipped until it catches up.",
    )
    replica_check_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often the read replicas' health and lag are checked.",
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
        default=BUNDLED_MODEL,
        description="embedding_model for new datastores: the bundled model or a name in models.",
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="Embedding models offered besides the bundled one, name -> local model "
        'folder, as JSON (e.g. {"e5-small": "/models/e5-small"}). Datastores choose a model '
        "by one of these names (or the bundled one, or 'none'); no request names a path.",
    )
    default_chunk_size: int = Field(default=200, ge=16, description="Chunk size in model tokens.")
    default_chunk_overlap: int = Field(default=40, ge=0, description="Chunk overlap in tokens.")
    hnsw_m: int = Field(
        default=_field("hnsw.m", "default"),
        ge=_field("hnsw.m", "minimum"),
        le=_field("hnsw.m", "maximum"),
        description="HNSW m for new datastores.",
    )
    hnsw_ef_construction: int = Field(
        default=_field("hnsw.ef_construction", "default"),
        ge=2 * _field("hnsw.m", "minimum"),  # and at least 2 * hnsw_m: _check_hnsw
        le=_field("hnsw.ef_construction", "maximum"),
        description="HNSW ef_construction for new datastores.",
    )
    hnsw_ef_search: int = Field(
        default=_field("hnsw.ef_search", "default"),
        ge=_field("hnsw.ef_search", "minimum"),
        le=_field("hnsw.ef_search", "maximum"),
        description="HNSW ef_search for new datastores.",
    )
    default_vector_precision: VectorPrecision = Field(
        default=VectorPrecision.FLOAT16,
        description="HNSW index precision of new datastores (config.vector_precision): "
        "float16 indexes halfvec (57% of the float32 index on SciFact, same nDCG@10) and "
        "scores on the stored float32 vectors; float32 indexes vector (docs/scale.md).",
    )
    embedded_shared_buffers_mb: int = Field(
        default=0,
        ge=0,
        le=1_048_576,
        description="The embedded PostgreSQL's shared_buffers in MB, applied when the service "
        "starts it (0: PostgreSQL's default, 128 MB). Give it at least the size of the HNSW "
        "indexes queried: a 1M-chunk datastore's float16 index is about 1.1 GB, and queries "
        "on it were 2-3x slower with 128 MB (docs/scale.md). No effect with DATABASE_URL.",
    )
    index_build_memory_mb: int = Field(
        default=1024,
        ge=64,
        le=262_144,
        description="maintenance_work_mem (MB) of an HNSW build over existing rows (a rebuild "
        "after an hnsw or metric change, a re-embedding's new index), SET LOCAL in the building "
        "transaction. The build is fast while the graph fits (about 2.4 GB per million "
        "384-dim chunks at m=16, docs/scale.md) and much slower once it does not.",
    )
    index_build_parallel_workers: int = Field(
        default=2,
        ge=0,
        le=64,
        description="max_parallel_maintenance_workers of an HNSW build (SET LOCAL; also bounded "
        "by the server's max_parallel_workers). Parallel builds keep the graph in shared memory.",
    )
    index_build_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        le=86_400,
        description="statement_timeout of an HNSW build (SET LOCAL): a million chunks take "
        "minutes, past statement_timeout_s. A call's own deadline still cancels a rebuild run "
        "by UpdateDatastore sooner.",
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
        default=_field("text_search_config", "default"),
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
        description="Models loaded at start-up, by name: the bundled one or names in models "
        "(health is SERVING only once they are).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as readable text, or one JSON object per line (docs/operations.md).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Least severe log level written; INFO includes one access line per RPC.",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of a plain HTTP server for Prometheus' /metrics, bound to host "
        "(0 = none; the HTTP endpoint, when it runs, serves /metrics too).",
    )
    create_local_key: bool = Field(
        default=True,
        description="On a fresh data directory, create a local user and API key in data_dir.",
    )
    reembed_batch_size: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Chunks a re-embedding job reads, embeds (behind queries, like "
        "ingestion) and writes per batch: its memory bound and its unit of progress.",
    )
    reembed_pause_ms: float = Field(
        default=0.0,
        ge=0,
        le=60_000,
        description="Pause between two batches of a re-embedding job, to leave CPU to "
        "queries and ingestion on a busy server.",
    )
    lookup_cache_ttl_s: float = Field(
        default=30.0,
        gt=0,
        le=60,
        description="Longest time a cached API key, token subject, datastore or agent link is "
        "used without asking the database again, so a revocation holds even when its change "
        "notification is lost (a pooler, a dead listener connection).",
    )
    negative_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="How long an unknown API key or token subject is remembered as unknown "
        "(0 = never), so repeating a bogus credential does not reach the database each time.",
    )

    @model_validator(mode="after")
    def _check_hnsw(self) -> Settings:
        if self.hnsw_ef_construction < 2 * self.hnsw_m:
            raise ValueError("hnsw_ef_construction must be at least 2 * hnsw_m (pgvector's rule)")
        return self

    @model_validator(mode="after")
    def _check_read_replicas(self) -> Settings:
        if self.read_database_urls and not self.database_url:
            raise ValueError("read_database_urls needs database_url (the primary they follow)")
        return self

    @model_validator(mode="after")
    def _check_model_names(self) -> Settings:
        for name, path in self.models.items():
            if name in (*BUNDLED_MODEL_NAMES, NO_MODEL_NAME) or not name or len(name) > 200:
                raise ValueError(f"models: {name[:200]!r} cannot name a configured model")
            if not path or "\x00" in path or "\x00" in name:
                raise ValueError(f"models: {name!r} needs a local folder path")
        offered = self.model_names
        if self.default_embedding_model not in offered:
            raise ValueError(
                f"default_embedding_model must be one of {offered} (a name, not a path)"
            )
        unknown = [n for n in self.preload_models if n not in offered]
        if unknown:
            raise ValueError(f"preload_models {unknown} are not among {offered}")
        return self

    @property
    def model_names(self) -> list[str]:
        """Every embedding model name a datastore may choose, besides 'none'."""
        return [*BUNDLED_MODEL_NAMES, *sorted(self.models)]

    @property
    def api_key_file(self) -> Path:
        return self.data_dir / "api-key"

    @property
    def model_dir(self) -> Path:
        return self.onnx_cache_dir or self.data_dir / "models"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"
