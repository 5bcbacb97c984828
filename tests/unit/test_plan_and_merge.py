"""A query's plan per datastore and the merge of their candidates (core/query_plan.py)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core import query_plan
from service.core.query_plan import FALLBACK_HITS, Plan
from service.models import SearchMode
from service.query_models import Candidate, QuerySpec
from tests.helpers.values import candidate, datastore

TEXT = QuerySpec(text="rivers")
VECTOR = QuerySpec(vector=np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32))


def test_the_datastore_settings_apply_unless_the_query_overrides_them() -> None:
    ds = datastore(threshold=0.4, max_results=7)
    assert query_plan.plan(ds, TEXT) == Plan(ds, 7, 0.4, SearchMode.VECTOR)
    spec = QuerySpec(text="rivers", max_results=2, similarity_threshold=0.9)
    assert query_plan.plan(ds, spec) == Plan(ds, 2, 0.9, SearchMode.VECTOR)
    # an explicit 0 is an override, not "unset"
    assert query_plan.plan(ds, QuerySpec(text="x", similarity_threshold=0.0)).threshold == 0.0


@pytest.mark.parametrize(
    ("default", "spec", "mode"),
    [
        (SearchMode.HYBRID, TEXT, SearchMode.HYBRID),
        (SearchMode.HYBRID, VECTOR, SearchMode.VECTOR),  # a vector implies VECTOR
        (SearchMode.VECTOR, QuerySpec(text="x", mode=SearchMode.KEYWORD), SearchMode.KEYWORD),
        (SearchMode.KEYWORD, TEXT, SearchMode.KEYWORD),
    ],
)
def test_the_mode_comes_from_the_query_then_the_datastore(
    default: SearchMode, spec: QuerySpec, mode: SearchMode
) -> None:
    assert query_plan.plan(datastore(mode=default), spec).mode is mode


def test_keyword_mode_has_no_threshold() -> None:
    ds = datastore(threshold=0.8, mode=SearchMode.KEYWORD)
    assert query_plan.plan(ds, QuerySpec(text="x", similarity_threshold=0.9)).threshold == 0.0


def test_passing_hits_merge_by_score_across_datastores() -> None:
    a, b = datastore(max_results=3), datastore(max_results=3)
    per = [
        (query_plan.plan(a, TEXT), [candidate(a.id, 1, 0.9), candidate(a.id, 2, 0.6)]),
        (query_plan.plan(b, TEXT), [candidate(b.id, 3, 0.8), candidate(b.id, 4, 0.2)]),
    ]
    result = query_plan.merge(per, TEXT)
    assert [h.chunk_id for h in result.hits] == [1, 3, 2]
    assert not any(h.below_threshold for h in result.hits)
    assert [(r.datastore_id, r.hit_count, r.fallback) for r in result.reports] == [
        (a.id, 2, False),
        (b.id, 1, False),
    ]
    limited = query_plan.merge(per, QuerySpec(text="rivers", max_results=2))
    assert [h.chunk_id for h in limited.hits] == [1, 3]


def test_equal_scores_order_by_chunk_id() -> None:
    a = datastore()
    found = [candidate(a.id, 9, 0.7), candidate(a.id, 4, 0.7)]
    result = query_plan.merge([(query_plan.plan(a, TEXT), found)], TEXT)
    assert [h.chunk_id for h in result.hits] == [4, 9]


def test_when_nothing_passes_the_best_three_come_back_flagged() -> None:
    a, b, off = datastore(max_results=10), datastore(max_results=2), datastore(fallback=False)
    per = [
        (query_plan.plan(a, TEXT), [candidate(a.id, i, 0.4 - i / 100) for i in range(1, 6)]),
        (query_plan.plan(b, TEXT), [candidate(b.id, 10 + i, 0.45 - i / 10) for i in range(3)]),
        (query_plan.plan(off, TEXT), [candidate(off.id, 99, 0.49)]),
    ]
    result = query_plan.merge(per, TEXT)
    assert [h.chunk_id for h in result.hits] == [10, 1, 2]
    assert len(result.hits) == FALLBACK_HITS
    assert all(h.below_threshold for h in result.hits)
    assert [(r.hit_count, r.fallback) for r in result.reports] == [(2, True), (1, True), (0, False)]


def test_fallback_is_capped_by_max_results() -> None:
    a = datastore(max_results=1)
    found = [candidate(a.id, i, 0.1) for i in range(5)]
    result = query_plan.merge([(query_plan.plan(a, TEXT), found)], TEXT)
    assert len(result.hits) == 1


def test_mixed_modes_interleave_by_rank() -> None:
    vec, kw = datastore(), datastore(mode=SearchMode.KEYWORD)
    per = [
        (query_plan.plan(vec, TEXT), [candidate(vec.id, 1, 0.9), candidate(vec.id, 2, 0.8)]),
        # BM25 scores do not compare with cosine scores
        (query_plan.plan(kw, TEXT), [candidate(kw.id, 3, 12.0), candidate(kw.id, 4, 7.0)]),
    ]
    result = query_plan.merge(per, TEXT)
    assert [h.chunk_id for h in result.hits] == [3, 1, 4, 2]
    assert [r.mode for r in result.reports] == [SearchMode.VECTOR, SearchMode.KEYWORD]


def test_finish_keeps_the_best_chunk_per_document_when_asked() -> None:
    a = datastore(max_results=2)
    doc = uuid.uuid4()
    found = [
        candidate(a.id, 1, 0.9, document_id=doc),
        candidate(a.id, 2, 0.8, document_id=doc),
        candidate(a.id, 3, 0.7),
        candidate(a.id, 4, 0.6),
    ]
    plan = query_plan.plan(a, TEXT)
    assert [c.hit.chunk_id for c in query_plan.finish(plan, TEXT, found)] == [1, 2]
    distinct = QuerySpec(text="rivers", distinct_documents=True)
    assert [c.hit.chunk_id for c in query_plan.finish(plan, distinct, found)] == [1, 3]


def test_finish_keeps_the_fallback_pool_when_nothing_passes() -> None:
    a = datastore(max_results=2)
    found = [candidate(a.id, 1, 0.3), candidate(a.id, 2, 0.2), candidate(a.id, 3, 0.1)]
    kept = query_plan.finish(query_plan.plan(a, TEXT), TEXT, found)
    assert [c.hit.chunk_id for c in kept] == [1, 2]


scores = st.lists(st.floats(0, 1, allow_nan=False), max_size=8)


@given(each=st.lists(scores, min_size=1, max_size=4), limit=st.none() | st.integers(1, 10))
def test_merge_properties(each: list[list[float]], limit: int | None) -> None:
    spec = QuerySpec(text="x", max_results=limit)
    per: list[tuple[Plan, list[Candidate]]] = []
    chunk = 0
    for found_scores in each:
        ds = datastore(max_results=10)
        found = []
        for s in sorted(found_scores, reverse=True):
            chunk += 1
            found.append(candidate(ds.id, chunk, s))
        per.append((query_plan.plan(ds, spec), found))
    result = query_plan.merge(per, spec)
    hits = result.hits
    any_pass = any(c.passes for _, found in per for c in found)
    assert all(h.below_threshold is not any_pass for h in hits)
    assert [(-h.score, h.chunk_id) for h in hits] == sorted((-h.score, h.chunk_id) for h in hits)
    assert len(hits) <= (limit if limit is not None else 10 * len(per))
    if not any_pass:
        assert len(hits) <= FALLBACK_HITS
    assert sum(r.hit_count for r in result.reports) == len(hits)


def _request(ds_mode: SearchMode, k: int = 5) -> query_plan.DatastoreSearch:
    ds = datastore(mode=ds_mode)
    return query_plan.DatastoreSearch(
        datastore=ds,
        mode=ds_mode,
        k=k,
        threshold=0.5,
        exact=False,
        text="rivers",
        vector=None if ds_mode is SearchMode.KEYWORD else VECTOR.vector,
        where=None,
        hybrid_candidates=20,
    )


def test_each_mode_becomes_its_storage_searches_and_hybrid_is_fused_back() -> None:
    vector, keyword, hybrid = (
        _request(m) for m in (SearchMode.VECTOR, SearchMode.KEYWORD, SearchMode.HYBRID)
    )
    searches = query_plan.searches([vector, hybrid, keyword])
    assert [(type(s).__name__, s.k) for s in searches] == [
        ("VectorSearch", 5),
        ("VectorSearch", 20),  # hybrid's sides take max(k, hybrid_candidates)
        ("KeywordSearch", 20),
        ("KeywordSearch", 5),
    ]
    ids = [vector.datastore.id, hybrid.datastore.id, hybrid.datastore.id, keyword.datastore.id]
    found = [[candidate(ds_id, i, 0.9 - i / 10)] for i, ds_id in enumerate(ids)]
    fused = query_plan.fused([vector, hybrid, keyword], found)
    assert [[c.hit.chunk_id for c in each] for each in fused] == [[0], [1, 2], [3]]
