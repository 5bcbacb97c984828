"""A query's plan for each datastore, and the merge of every datastore's candidates.

Pure functions of values: no database, no model (tests/unit covers them directly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from uuid import UUID

from service.models import Datastore, DatastoreReport, Hit, QueryResult, QuerySpec, SearchMode
from service.storage.candidates import Candidate

FALLBACK_HITS = 3


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
