"""Reciprocal Rank Fusion of a vector and a keyword ranking (core/fusion.py)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.fusion import reciprocal_rank_fusion
from service.query_models import Candidate
from tests.helpers.values import candidate

DS = uuid.UUID(int=0)


def ranked(chunk: int, score: float, keyword_score: float | None = None) -> Candidate:
    return candidate(
        DS, chunk, score, document_id=uuid.UUID(int=chunk), vector_score=score,
        keyword_score=keyword_score,
    )  # fmt: skip


def test_rrf_fuses_by_rank() -> None:
    vector = [ranked(1, 0.9), ranked(2, 0.8), ranked(3, 0.4)]
    keyword = [ranked(3, 0.4, keyword_score=7.0), ranked(4, 0.1, keyword_score=5.0)]
    fused = reciprocal_rank_fusion(vector, keyword, 60)
    expected = {1: 1 / 61, 2: 1 / 62, 3: 1 / 63 + 1 / 61, 4: 1 / 62}
    assert [c.hit.chunk_id for c in fused] == [3, 1, 2, 4]  # 2 and 4 tie: chunk id breaks it
    assert {c.hit.chunk_id: c.hit.score for c in fused} == pytest.approx(expected)
    by_id = {c.hit.chunk_id: c for c in fused}
    assert by_id[3].hit.keyword_score == 7.0 and by_id[3].hit.vector_score == 0.4
    assert by_id[1].hit.keyword_score is None
    assert [by_id[i].passes for i in (1, 2, 3, 4)] == [True, True, False, False]


def test_a_smaller_k_widens_the_gap_between_ranks() -> None:
    one = [ranked(1, 0.9), ranked(2, 0.8)]
    near, far = reciprocal_rank_fusion(one, [], 1), reciprocal_rank_fusion(one, [], 1000)
    assert near[0].hit.score - near[1].hit.score > far[0].hit.score - far[1].hit.score


def test_empty_rankings_fuse_to_nothing() -> None:
    assert reciprocal_rank_fusion([], [], 60) == []


rankings = st.lists(st.integers(1, 40), unique=True, max_size=25)


@given(vector=rankings, keyword=rankings, k=st.integers(1, 200))
def test_fused_scores_are_the_sum_over_lists_and_sorted(
    vector: list[int], keyword: list[int], k: int
) -> None:
    fused = reciprocal_rank_fusion(
        [ranked(c, 0.5) for c in vector], [ranked(c, 0.5, keyword_score=1.0) for c in keyword], k
    )
    assert {c.hit.chunk_id for c in fused} == set(vector) | set(keyword)
    for c in fused:
        expected = sum(
            1 / (k + ranking.index(c.hit.chunk_id) + 1)
            for ranking in (vector, keyword)
            if c.hit.chunk_id in ranking
        )
        assert c.hit.score == pytest.approx(expected)
        assert (c.hit.keyword_score is not None) == (c.hit.chunk_id in keyword)
    keys = [(-c.hit.score, c.hit.chunk_id) for c in fused]
    assert keys == sorted(keys)
