"""A query's plan for each datastore, the storage searches that answer it (hybrid's two
fused by RRF), the merge of every datastore's candidates, and the response's byte budget.

Pure functions of values: no database, no model (tests/unit covers them directly).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from uuid import UUID

from service.core.fusion import reciprocal_rank_fusion
from service.models import Datastore, SearchMode, Vector
from service.query_models import Candidate, DatastoreReport, Hit, QueryResult, QuerySpec
from service.storage.filters import Compiled
from service.storage.search_plan import KeywordSearch, Search, VectorSearch

FALLBACK_HITS = 3
# Bytes a hit costs beyond its text fields: ids, scores, field tags (a generous bound).
_HIT_OVERHEAD = 160


class DatastoreSearch(NamedTuple):
    """What to search in one datastore; ``k`` candidates come back, best first (a named
    tuple: built for every datastore of every query, several times cheaper than a
    frozen dataclass)."""

    datastore: Datastore
    mode: SearchMode
    k: int
    threshold: float
    exact: bool
    text: str | None
    vector: Vector | None
    where: Compiled | None
    hybrid_candidates: int  # the least each side of a hybrid search contributes


@dataclass(frozen=True)
class Plan:
    """The settings a query applies to one datastore."""

    datastore: Datastore
    max_results: int
    threshold: float
    mode: SearchMode = SearchMode.VECTOR


def plan(datastore: Datastore, spec: QuerySpec) -> Plan:
    """The settings applied to one datastore. A query vector implies VECTOR mode;
    keyword mode has no vector score, so no threshold applies to it."""
    mode = spec.mode or (SearchMode.VECTOR if spec.vector is not None else None)
    mode = mode or datastore.config.search_mode
    threshold = (
        spec.similarity_threshold
        if spec.similarity_threshold is not None
        else datastore.similarity_threshold
    )
    return Plan(
        datastore,
        spec.max_results if spec.max_results is not None else datastore.max_results,
        0.0 if mode is SearchMode.KEYWORD else threshold,
        mode,
    )


def searches(requests: Iterable[DatastoreSearch]) -> list[Search]:
    """The storage searches answering ``requests``, in order, for one storage call.

    Hybrid takes max(k, hybrid_candidates) candidates from each side, both under the
    metadata filter; both go to the database with every other search of the query.
    """
    return [search for request in requests for search in _searches(request)]


def fused(
    requests: Sequence[DatastoreSearch], found: Sequence[list[Candidate]]
) -> list[list[Candidate]]:
    """Each request's candidates from ``found`` (one list per storage search, in the
    order of :func:`searches`): hybrid's two lists fused by Reciprocal Rank Fusion.
    Every fused hit carries its vector score, which is what the threshold applies to."""
    lists = iter(found)
    out = []
    for s in requests:
        if s.mode is SearchMode.HYBRID:
            dense, sparse = next(lists), next(lists)
            out.append(reciprocal_rank_fusion(dense, sparse, s.datastore.config.rrf_k))
        else:
            out.append(next(lists))
    return out


def _searches(s: DatastoreSearch) -> tuple[Search, ...]:
    """The storage searches answering ``s``: hybrid's are (vector, keyword)."""
    if s.mode is SearchMode.KEYWORD:
        assert s.text is not None
        return (KeywordSearch(s.datastore, s.text, k=s.k, where=s.where),)
    assert s.vector is not None
    if s.mode is SearchMode.VECTOR:
        return (VectorSearch(s.datastore, s.vector, s.k, s.threshold, s.exact, s.where),)
    assert s.text is not None
    depth = max(s.k, s.hybrid_candidates)
    return (
        VectorSearch(s.datastore, s.vector, depth, s.threshold, s.exact, s.where),
        KeywordSearch(
            s.datastore, s.text, depth, where=s.where, vector=s.vector, threshold=s.threshold
        ),
    )


def finish(plan: Plan, spec: QuerySpec, found: list[Candidate]) -> list[Candidate]:
    """One datastore's contribution: its best chunk per document when the query asks
    for distinct documents, then at most ``plan.max_results`` (see :func:`_cut`)."""
    if spec.distinct_documents:
        found = _best_chunk_per_document(found)
    return _cut(found, plan.max_results)


def merge(per_datastore: list[tuple[Plan, list[Candidate]]], spec: QuerySpec) -> QueryResult:
    """Passing hits of every datastore by score; fallback hits only when none passed."""
    passing = [c.hit for _, found in per_datastore for c in found if c.passes]
    fallback = False
    if not passing:
        fallback = True
        passing = [
            _flagged(c.hit)
            for plan, found in per_datastore
            if plan.datastore.config.low_confidence_fallback
            for c in found[: min(FALLBACK_HITS, plan.max_results)]
        ]
    if len({plan.mode for plan, _ in per_datastore}) > 1:
        # Scores of different modes do not compare: interleave by rank instead.
        ranks = {
            (c.hit.datastore_id, c.hit.chunk_id): rank
            for _, found in per_datastore
            for rank, c in enumerate(found)
        }
        passing.sort(key=lambda h: (ranks[(h.datastore_id, h.chunk_id)], -h.score, h.chunk_id))
    else:
        passing.sort(key=lambda h: (-h.score, h.chunk_id))
    # Each datastore already contributed at most its own max_results; a request
    # override also bounds the merged list. Fallback hits: the best min(3, max_results).
    limit = spec.max_results
    if fallback:
        widest = max((p.max_results for p, _ in per_datastore), default=0)
        limit = min(FALLBACK_HITS, limit if limit is not None else widest)
    hits = passing if limit is None else passing[:limit]
    reports = [
        DatastoreReport(
            datastore_id=plan.datastore.id,
            metric=plan.datastore.metric,
            similarity_threshold=plan.threshold,
            max_results=plan.max_results,
            hit_count=(count := sum(1 for h in hits if h.datastore_id == plan.datastore.id)),
            fallback=fallback and count > 0,
            mode=plan.mode,
        )
        for plan, _ in per_datastore
    ]
    return QueryResult(hits, reports)


def _cut(found: list[Candidate], n: int) -> list[Candidate]:
    """The best n passing candidates; or, when none passes, the best n (fallback pool)."""
    passing = [c for c in found if c.passes][:n]
    return passing if passing else found[:n]


def _flagged(hit: Hit) -> Hit:
    return dataclasses.replace(hit, below_threshold=True)


def _best_chunk_per_document(found: list[Candidate]) -> list[Candidate]:
    seen: set[UUID] = set()
    out = []
    for c in found:  # already best first
        if c.hit.document_id not in seen:
            seen.add(c.hit.document_id)
            out.append(c)
    return out


def hit_bytes(hit: Hit) -> int:
    """An upper estimate of ``hit``'s encoded size."""
    metadata = json.dumps(hit.metadata, separators=(",", ":")) if hit.metadata else ""
    return (
        _HIT_OVERHEAD
        + len(hit.external_id.encode())
        + len(hit.title.encode())
        + len(hit.content.encode())
        + 2 * len(metadata.encode())  # a Struct encodes each value with its type tag
    )


def fit_response(result: QueryResult, budget: int) -> QueryResult:
    """``result`` with the best hits that fit ``budget`` bytes; ``truncated`` if any was cut.

    The budget holds even for one hit: a caller may get no hits and ``truncated``.
    """
    used = sum(200 for _ in result.reports)
    for i, hit in enumerate(result.hits):
        used += hit_bytes(hit)
        if used > budget:
            return dataclasses.replace(result, hits=result.hits[:i], truncated=True)
    return result
