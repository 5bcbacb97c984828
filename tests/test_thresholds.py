"""Threshold (inclusive, after the ANN scan), max_results, overrides, cap and fallback."""

from __future__ import annotations

import time

import grpc
import numpy as np

from service.app import App
from service.client import Client, pb
from tests.helpers.rpc import ingest_vectors, query_vector, status_of, vector_datastore

# Dot products against q = [1, 0] are exactly these (all binary fractions).
DOT_SCORES = [0.75, 0.5, 0.25, 0.125]


def dot_datastore(client: Client, threshold: float, max_results: int = 10) -> pb.Datastore:
    ds = vector_datastore(client, pb.DOT, 2, threshold=threshold, max_results=max_results)
    ingest_vectors(client, ds.id, np.array([[s, 0.0] for s in DOT_SCORES], dtype=np.float32))
    return ds


def test_threshold_is_inclusive(client: Client) -> None:
    ds = dot_datastore(client, threshold=0.5)
    got = query_vector(client, [ds.id], [1.0, 0.0])
    assert [h.score for h in got.hits] == [0.75, 0.5]
    assert not any(h.below_threshold for h in got.hits)
    assert got.datastores[0].similarity_threshold == 0.5


def test_threshold_override_replaces_the_datastore_value(client: Client) -> None:
    ds = dot_datastore(client, threshold=0.5)
    got = query_vector(client, [ds.id], [1.0, 0.0], similarity_threshold=0.25)
    assert [h.score for h in got.hits] == [0.75, 0.5, 0.25]
    got = query_vector(client, [ds.id], [1.0, 0.0], similarity_threshold=0.75)
    assert [h.score for h in got.hits] == [0.75]


def test_euclidean_boundary_is_inclusive(client: Client) -> None:
    ds = vector_datastore(client, pb.EUCLIDEAN, 2, threshold=0.5)
    # distances 1 (score 0.5, on the boundary) and 3 (score 0.25)
    ingest_vectors(client, ds.id, np.array([[1, 0], [3, 0]], dtype=np.float32))
    got = query_vector(client, [ds.id], [0.0, 0.0])
    assert [(h.external_id, h.score, h.distance) for h in got.hits] == [("v0", 0.5, 1.0)]


def test_max_results_from_datastore_and_override(client: Client) -> None:
    ds = dot_datastore(client, threshold=0.0, max_results=2)
    assert len(query_vector(client, [ds.id], [1.0, 0.0]).hits) == 2
    got = query_vector(client, [ds.id], [1.0, 0.0], max_results=3)
    assert [h.score for h in got.hits] == [0.75, 0.5, 0.25]
    assert got.datastores[0].max_results == 3


def test_threshold_applies_after_the_ann_scan_not_under_it(client: Client) -> None:
    """Many rows pass the threshold: the result is exactly max_results, best first."""
    ds = vector_datastore(client, pb.COSINE, 4, threshold=0.1, max_results=50)
    rng = np.random.default_rng(7)
    base = np.array([1, 0, 0, 0], dtype=np.float32)
    docs = base + rng.normal(scale=0.2, size=(400, 4)).astype(np.float32)
    ingest_vectors(client, ds.id, docs)
    got = query_vector(client, [ds.id], base.tolist())
    assert len(got.hits) == 50
    assert all(h.score >= 0.1 for h in got.hits)


def test_max_results_override_above_cap_is_rejected(client: Client) -> None:
    ds = dot_datastore(client, threshold=0.0)
    code, msg = status_of(lambda: query_vector(client, [ds.id], [1.0, 0.0], max_results=1001))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1000" in msg


def test_fallback_returns_best_three_flagged(client: Client) -> None:
    ds = dot_datastore(client, threshold=0.9, max_results=10)
    got = query_vector(client, [ds.id], [1.0, 0.0])
    assert [h.score for h in got.hits] == [0.75, 0.5, 0.25]
    assert all(h.below_threshold for h in got.hits)
    assert got.datastores[0].fallback


def test_fallback_is_capped_by_max_results(client: Client) -> None:
    ds = dot_datastore(client, threshold=0.9, max_results=2)
    got = query_vector(client, [ds.id], [1.0, 0.0])
    assert [h.score for h in got.hits] == [0.75, 0.5]
    assert all(h.below_threshold for h in got.hits)


def test_no_fallback_when_disabled(client: Client) -> None:
    ds = vector_datastore(client, pb.DOT, 2, threshold=0.9, fallback=False)
    ingest_vectors(client, ds.id, np.array([[0.5, 0]], dtype=np.float32))
    got = query_vector(client, [ds.id], [1.0, 0.0])
    assert list(got.hits) == []
    assert not got.datastores[0].fallback


def test_distinct_documents_keeps_best_chunk_per_document(client: Client) -> None:
    ds = vector_datastore(client, pb.DOT, 2, threshold=0.0)
    chunks = [pb.ChunkInput(content=f"c{s}", vector=[s, 0.0]) for s in (0.75, 0.5, 0.25)]
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[
                pb.DocumentInput(external_id="many", chunks=chunks),
                pb.DocumentInput(
                    external_id="one", chunks=[pb.ChunkInput(content="x", vector=[0.6, 0.0])]
                ),
            ],
        )
    )
    plain = query_vector(client, [ds.id], [1.0, 0.0])
    assert [h.external_id for h in plain.hits] == ["many", "one", "many", "many"]
    got = query_vector(client, [ds.id], [1.0, 0.0], distinct_documents=True)
    assert [(h.external_id, h.content) for h in got.hits] == [("many", "c0.75"), ("one", "x")]


def test_settings_changed_by_another_replica_apply_to_the_next_query(
    client: Client, app: App
) -> None:
    """Datastore settings are cached; a change committed elsewhere is announced and seen."""
    ds = dot_datastore(client, threshold=0.5)
    assert len(query_vector(client, [ds.id], [1.0, 0.0]).hits) == 2  # now cached
    with app.db.connection() as conn:  # as another replica (or Agentopia itself) would
        conn.execute("UPDATE datastores SET similarity_threshold = 0.25 WHERE id = %s", (ds.id,))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if len(query_vector(client, [ds.id], [1.0, 0.0]).hits) == 3:
            break
        time.sleep(0.05)
    assert [h.score for h in query_vector(client, [ds.id], [1.0, 0.0]).hits] == [0.75, 0.5, 0.25]


def test_fallback_over_several_datastores_keeps_the_best_three(client: Client) -> None:
    a = dot_datastore(client, threshold=0.9)
    b = dot_datastore(client, threshold=0.9)
    empty = vector_datastore(client, pb.DOT, 2, threshold=0.9)
    got = query_vector(client, [a.id, b.id, empty.id], [1.0, 0.0])
    assert [h.score for h in got.hits] == [0.75, 0.75, 0.5]
    assert all(h.below_threshold for h in got.hits)
    reports = {r.datastore_id: r for r in got.datastores}
    assert reports[empty.id].hit_count == 0
    assert not reports[empty.id].fallback
    assert reports[a.id].fallback
