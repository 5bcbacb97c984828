"""Reciprocal Rank Fusion of a vector and a keyword ranking (hybrid search)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from service.query_models import Candidate


def reciprocal_rank_fusion(
    vector: Sequence[Candidate], keyword: Sequence[Candidate], k: int
) -> list[Candidate]:
    """Both rankings fused, best first: a chunk scores sum(1 / (k + rank)) over the lists
    holding it (ranks from 1), ties broken by chunk id.

    A fused hit keeps its vector distance, vector score and threshold verdict (both
    lists carry them) and gains the BM25 score when the keyword list holds it.
    """
    fused: dict[int, float] = {}
    first: dict[int, Candidate] = {}
    for ranking in (vector, keyword):
        for rank, c in enumerate(ranking, start=1):
            chunk = c.hit.chunk_id
            fused[chunk] = fused.get(chunk, 0.0) + 1.0 / (k + rank)
            first.setdefault(chunk, c)
    bm25 = {c.hit.chunk_id: c.hit.keyword_score for c in keyword}
    out = [
        Candidate(
            dataclasses.replace(c.hit, score=fused[chunk], keyword_score=bm25.get(chunk)),
            c.passes,
        )
        for chunk, c in first.items()
    ]
    out.sort(key=lambda c: (-c.hit.score, c.hit.chunk_id))
    return out
