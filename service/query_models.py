"""The value types of a query: the request after validation, the hits, and what the
query did with each datastore (transport-neutral, as in models.py)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from service.models import JsonObject, Metric, SearchMode, Vector


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
class Candidate:
    """A hit as a search returns it (vector, keyword, hybrid's two sides), best first."""

    hit: Hit
    passes: bool  # score >= threshold


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
