"""Domain values built in a line, for the unit layer (no database involved)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from service.models import Datastore, DatastoreConfig, Metric, SearchMode
from service.query_models import Candidate, Hit

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def datastore(
    *,
    metric: Metric = Metric.COSINE,
    threshold: float = 0.5,
    max_results: int = 5,
    mode: SearchMode = SearchMode.VECTOR,
    fallback: bool = True,
    rrf_k: int = 60,
) -> Datastore:
    """A datastore value as storage would read it (config from its stored JSON form)."""
    config = DatastoreConfig.from_json(
        {
            "embedding_model": "none",
            "dimensions": 4,
            "search_mode": mode.value,
            "low_confidence_fallback": fallback,
            "rrf_k": rrf_k,
        }
    )
    return Datastore(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        name="unit",
        description="",
        type="pgvector",
        config=config,
        metric=metric,
        similarity_threshold=threshold,
        max_results=max_results,
        created_at=EPOCH,
        updated_at=EPOCH,
    )


def hit(
    datastore_id: UUID, chunk_id: int, score: float, *, document_id: UUID | None = None, **kw: Any
) -> Hit:
    """A hit of chunk ``chunk_id``; its own document unless ``document_id`` is given."""
    return Hit(
        datastore_id=datastore_id,
        document_id=document_id or uuid.uuid4(),
        external_id=f"doc-{chunk_id}",
        chunk_id=chunk_id,
        chunk_index=0,
        title="",
        content=f"chunk {chunk_id}",
        metadata={},
        score=score,
        distance=1.0 - score,
        **kw,
    )


def candidate(
    datastore_id: UUID, chunk_id: int, score: float, threshold: float = 0.5, **kw: Any
) -> Candidate:
    """A candidate flagged against ``threshold`` as the search statement flags it."""
    return Candidate(hit(datastore_id, chunk_id, score, **kw), score >= threshold)
