"""Building and validating a datastore's config from a request and the server defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from service import scoring
from service.embedding.registry import ModelRegistry
from service.errors import InvalidArgument
from service.models import (
    DEFAULT_BM25_B,
    DEFAULT_BM25_K1,
    DEFAULT_RRF_K,
    NO_MODEL,
    DatastoreConfig,
    HnswParams,
    SearchMode,
)
from service.settings import Settings
from service.storage.partitions import BuildResources


@dataclass(frozen=True)
class ConfigRequest:
    """What a caller asked for; zero / None means 'the default'."""

    embedding_model: str = ""
    dimensions: int = 0
    chunk_size: int = 0
    chunk_overlap: int | None = None
    search_mode: SearchMode | None = None
    hnsw_m: int = 0
    hnsw_ef_construction: int = 0
    hnsw_ef_search: int = 0
    low_confidence_fallback: bool | None = None
    text_search_config: str = ""
    rrf_k: int = 0
    bm25_k1: float | None = None
    bm25_b: float | None = None


def build_config(
    request: ConfigRequest, settings: Settings, models: ModelRegistry
) -> DatastoreConfig:
    """A complete, validated config; raises InvalidArgument naming the bad field."""
    model = request.embedding_model or settings.default_embedding_model
    if model == NO_MODEL:
        if request.dimensions <= 0:
            raise InvalidArgument("config.dimensions is required when embedding_model is 'none'")
        dimensions = request.dimensions
        max_tokens = settings.default_chunk_size
    else:
        models.check_name(model)  # an unknown name is the caller's mistake: INVALID_ARGUMENT
        embedder = models.get(model)
        if request.dimensions not in (0, embedder.dimensions):
            raise InvalidArgument(
                f"config.dimensions {request.dimensions} does not match model {model!r}, "
                f"which produces {embedder.dimensions}"
            )
        dimensions = embedder.dimensions
        max_tokens = embedder.max_tokens
    if not 1 <= dimensions <= scoring.MAX_DIMENSIONS:
        raise InvalidArgument(f"config.dimensions must be 1..{scoring.MAX_DIMENSIONS}")

    chunk_size = request.chunk_size or min(settings.default_chunk_size, max_tokens)
    if not 8 <= chunk_size <= max_tokens:
        raise InvalidArgument(
            f"config.chunk_size must be 8..{max_tokens} tokens (the model's window), "
            f"got {chunk_size}"
        )
    overlap = request.chunk_overlap
    if overlap is None:
        overlap = min(settings.default_chunk_overlap, chunk_size // 4)
    if not 0 <= overlap < chunk_size:
        raise InvalidArgument(
            f"config.chunk_overlap must be >= 0 and < chunk_size ({chunk_size}), got {overlap}"
        )
    mode = request.search_mode or SearchMode.VECTOR
    hnsw = HnswParams(
        m=request.hnsw_m or settings.hnsw_m,
        ef_construction=request.hnsw_ef_construction or settings.hnsw_ef_construction,
        ef_search=request.hnsw_ef_search or settings.hnsw_ef_search,
    )
    _check_hnsw(hnsw)
    return DatastoreConfig(
        embedding_model=model,
        dimensions=dimensions,
        chunk_size=chunk_size,
        chunk_overlap=overlap,
        search_mode=mode,
        hnsw=hnsw,
        low_confidence_fallback=(
            True if request.low_confidence_fallback is None else request.low_confidence_fallback
        ),
        **_keyword_settings(request, settings),
    )


def _keyword_settings(request: ConfigRequest, settings: Settings) -> dict[str, Any]:
    """text_search_config (checked against the database by the caller), rrf_k and BM25."""
    text_config = request.text_search_config or settings.default_text_search_config
    if len(text_config) > 128 or "\x00" in text_config:
        raise InvalidArgument("config.text_search_config is not a text search configuration name")
    rrf_k = request.rrf_k or DEFAULT_RRF_K
    if not 1 <= rrf_k <= 10_000:
        raise InvalidArgument(f"config.rrf_k must be 1..10000, got {rrf_k}")
    k1 = DEFAULT_BM25_K1 if request.bm25_k1 is None else request.bm25_k1
    if not (math.isfinite(k1) and 0.0 <= k1 <= 10.0):
        raise InvalidArgument(f"config.bm25_k1 must be 0..10, got {k1}")
    b = DEFAULT_BM25_B if request.bm25_b is None else request.bm25_b
    if not (math.isfinite(b) and 0.0 <= b <= 1.0):
        raise InvalidArgument(f"config.bm25_b must be 0..1, got {b}")
    return {"text_search_config": text_config, "rrf_k": rrf_k, "bm25_k1": k1, "bm25_b": b}


def _check_hnsw(hnsw: HnswParams) -> None:
    if not 2 <= hnsw.m <= 100:
        raise InvalidArgument(f"config.hnsw.m must be 2..100, got {hnsw.m}")
    if not 2 * hnsw.m <= hnsw.ef_construction <= 1000:
        raise InvalidArgument(
            f"config.hnsw.ef_construction must be 2*m ({2 * hnsw.m})..1000, "
            f"got {hnsw.ef_construction}"
        )
    if not 1 <= hnsw.ef_search <= 1000:
        raise InvalidArgument(f"config.hnsw.ef_search must be 1..1000, got {hnsw.ef_search}")


def index_build_resources(settings: Settings) -> BuildResources:
    """Memory, parallel workers and time of an HNSW build over existing rows."""
    return BuildResources(
        memory_mb=settings.index_build_memory_mb,
        parallel_workers=settings.index_build_parallel_workers,
        timeout_s=settings.index_build_timeout_s,
    )
