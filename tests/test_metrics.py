"""Every metric's scores and ordering equal a numpy brute force; HNSW agrees on a small set."""

from __future__ import annotations

import numpy as np
import pytest

from service.client import Client, pb
from tests.helpers.rpc import ingest_vectors, query_vector, vector_datastore

DIMS = 16
N = 300
K = 10


def reference(metric: int, docs: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, score) per document, computed as pgvector's operators and the score table."""
    d64, q64 = docs.astype(np.float64), q.astype(np.float64)
    if metric == pb.COSINE:
        dist = 1 - (d64 @ q64) / (np.linalg.norm(d64, axis=1) * np.linalg.norm(q64))
        return dist, 1 - dist
    if metric == pb.DOT:
        dist = -(d64 @ q64)
        return dist, -dist
    if metric == pb.EUCLIDEAN:
        dist = np.linalg.norm(d64 - q64, axis=1)
    else:
        dist = np.abs(d64 - q64).sum(axis=1)
    return dist, 1 / (1 + dist)


METRICS = [pb.COSINE, pb.DOT, pb.EUCLIDEAN, pb.MANHATTAN]


@pytest.mark.parametrize("metric", METRICS, ids=["cosine", "dot", "euclidean", "manhattan"])
def test_exact_search_matches_numpy(client: Client, metric: int) -> None:
    rng = np.random.default_rng(metric)
    docs = rng.normal(size=(N, DIMS)).astype(np.float32)
    ds = vector_datastore(client, metric, DIMS, max_results=K)
    ingest_vectors(client, ds.id, docs)
    for q in rng.normal(size=(5, DIMS)).astype(np.float32):
        dist, score = reference(metric, docs, q)
        expected = np.argsort(-score, kind="stable")[:K]
        got = query_vector(
            client,
            [ds.id],
            q.tolist(),
            exact=True,
            similarity_threshold=0.0 if metric != pb.DOT else None,
        )
        assert [h.external_id for h in got.hits] == [f"v{i}" for i in expected]
        np.testing.assert_allclose(
            [h.score for h in got.hits], score[expected], rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            [h.distance for h in got.hits], dist[expected], rtol=1e-5, atol=1e-5
        )
        scores = [h.score for h in got.hits]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("metric", METRICS, ids=["cosine", "dot", "euclidean", "manhattan"])
def test_hnsw_returns_the_exact_top_k_on_a_small_set(client: Client, metric: int) -> None:
    rng = np.random.default_rng(100 + metric)
    docs = rng.normal(size=(N, DIMS)).astype(np.float32)
    ds = vector_datastore(client, metric, DIMS, max_results=K)
    ingest_vectors(client, ds.id, docs)
    for q in rng.normal(size=(5, DIMS)).astype(np.float32):
        exact = query_vector(client, [ds.id], q.tolist(), exact=True, similarity_threshold=0.0)
        ann = query_vector(client, [ds.id], q.tolist(), similarity_threshold=0.0)
        assert [h.chunk_id for h in ann.hits] == [h.chunk_id for h in exact.hits]


@pytest.mark.parametrize("dims", [2500, 4100], ids=["halfvec-index", "no-index"])
def test_high_dimensional_datastores_search_correctly(client: Client, dims: int) -> None:
    """Above 2,000 dims the index is on halfvec; above 4,000 there is none (exact scan)."""
    rng = np.random.default_rng(dims)
    docs = rng.normal(size=(40, dims)).astype(np.float32)
    ds = vector_datastore(client, pb.COSINE, dims, max_results=5)
    ingest_vectors(client, ds.id, docs)
    q = rng.normal(size=dims).astype(np.float32)
    _, score = reference(pb.COSINE, docs, q)
    expected = np.argsort(-score, kind="stable")[:5]
    for exact in (True, False):
        got = query_vector(client, [ds.id], q.tolist(), exact=exact, similarity_threshold=0.0)
        assert [h.external_id for h in got.hits] == [f"v{i}" for i in expected]
        # halfvec keeps ~3 significant digits
        np.testing.assert_allclose([h.score for h in got.hits], score[expected], atol=2e-3)
