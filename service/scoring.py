"""The score table: pgvector operators, index opclasses and distance -> score.

| metric    | operator | score                         |
|-----------|----------|-------------------------------|
| cosine    | <=>      | 1 - distance                  |
| dot       | <#>      | -distance (the inner product) |
| euclidean | <->      | 1 / (1 + distance)            |
| manhattan | <+>      | 1 / (1 + distance)            |
"""

from __future__ import annotations

from service.models import Metric, VectorPrecision

OPERATORS: dict[Metric, str] = {
    Metric.COSINE: "<=>",
    Metric.DOT: "<#>",
    Metric.EUCLIDEAN: "<->",
    Metric.MANHATTAN: "<+>",
}

_OPCLASS_SUFFIX: dict[Metric, str] = {
    Metric.COSINE: "cosine_ops",
    Metric.DOT: "ip_ops",
    Metric.EUCLIDEAN: "l2_ops",
    Metric.MANHATTAN: "l1_ops",
}

# pgvector's HNSW limits: vector up to 2,000 dims, halfvec up to 4,000.
MAX_VECTOR_INDEX_DIMS = 2000
MAX_HALFVEC_INDEX_DIMS = 4000
MAX_DIMENSIONS = 16000


def index_type(dimensions: int, precision: VectorPrecision = VectorPrecision.FLOAT32) -> str | None:
    """The pgvector type the HNSW index is built on, or None when no index fits: halfvec
    when the datastore asks for float16, or when a float32 index would be too wide."""
    if dimensions <= MAX_VECTOR_INDEX_DIMS and precision is VectorPrecision.FLOAT32:
        return "vector"
    if dimensions <= MAX_HALFVEC_INDEX_DIMS:
        return "halfvec"
    return None


def opclass(
    metric: Metric, dimensions: int, precision: VectorPrecision = VectorPrecision.FLOAT32
) -> str:
    """The HNSW operator class for this metric over the indexed type."""
    return f"{index_type(dimensions, precision) or 'vector'}_{_OPCLASS_SUFFIX[metric]}"


def score_sql(metric: Metric, distance: str) -> str:
    """SQL expression turning the column ``distance`` (a trusted name) into the score."""
    if metric is Metric.COSINE:
        return f"(1 - {distance})"
    if metric is Metric.DOT:
        return f"(- {distance})"
    return f"(1 / (1 + {distance}))"


def score(metric: Metric, distance: float) -> float:
    """Python twin of :func:`score_sql`, for caller-side checks and tests."""
    if metric is Metric.COSINE:
        return 1.0 - distance
    if metric is Metric.DOT:
        return -distance
    return 1.0 / (1.0 + distance)
