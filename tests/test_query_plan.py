"""The query path uses the datastore's own HNSW index; updates rebuild it for a new metric."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2

from service.app import App
from service.client import Client, pb
from service.storage.partitions import index_name
from tests.helpers.rpc import ingest_vectors, query_vector, status_of, vector_datastore
from tests.helpers.search_checks import explain_search

DIMS = 32


def analyzed_datastore(
    client: Client, app: App, rows: int, dims: int, precision: int = pb.VECTOR_PRECISION_FLOAT32
) -> pb.Datastore:
    ds = vector_datastore(client, pb.COSINE, dims)
    ds = client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=ds.id,
                config=pb.DatastoreConfig(vector_precision=precision),  # type: ignore[arg-type]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["config.vector_precision"]),
        )
    )
    rng = np.random.default_rng(3)
    ingest_vectors(client, ds.id, rng.normal(size=(rows, dims)).astype(np.float32))
    # Fresh statistics either way, so the plan does not depend on whether autovacuum
    # has analyzed the new partition yet.
    with app.db.connection() as conn:
        conn.execute(f"ANALYZE datastore_chunks_{uuid.UUID(ds.id).hex}")
    return ds


@pytest.fixture
def big_datastore(client: Client, app: App) -> pb.Datastore:
    return analyzed_datastore(client, app, 4000, DIMS)


def assert_hnsw_scan(app: App, ds_id: str, generic: bool, dims: int = DIMS) -> None:
    nodes = explain_search(app, ds_id, generic, dims=dims)
    partition = f"datastore_chunks_{uuid.UUID(ds_id).hex}"
    chunk_scans = [n for n in nodes if n.get("Relation Name") == partition]
    assert [(n["Node Type"], n.get("Index Name")) for n in chunk_scans] == [
        ("Index Scan", index_name(uuid.UUID(ds_id)))
    ]


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
def test_query_uses_the_datastores_hnsw_index(
    app: App, big_datastore: pb.Datastore, generic: bool
) -> None:
    assert_hnsw_scan(app, big_datastore.id, generic)


@pytest.mark.parametrize(
    "precision",
    [pb.VECTOR_PRECISION_FLOAT32, pb.VECTOR_PRECISION_FLOAT16],
    ids=["float32", "float16"],
)
def test_prepared_query_uses_the_index_too_at_the_bundled_models_width(
    client: Client, app: App, precision: int
) -> None:
    # 4,000 chunks of 384 dimensions: a one-off plan walks the index. A prepared
    # statement's generic plan that does not know the LIMIT prices it at a tenth of the
    # rows and sorts the whole partition instead (measured ten times slower); the limit
    # is written into the statement so that it cannot. A float16 datastore's index is on
    # embedding::halfvec(384), which its ORDER BY must name to be served by it.
    ds = analyzed_datastore(client, app, 4000, 384, precision)
    assert ds.config.vector_precision == precision
    assert_hnsw_scan(app, ds.id, generic=False, dims=384)
    assert_hnsw_scan(app, ds.id, generic=True, dims=384)


def test_exact_search_scans_the_partition_in_any_plan(
    app: App, big_datastore: pb.Datastore
) -> None:
    # Planner settings do not reach a cached generic plan, so exactness must come from
    # the statement itself: its ORDER BY is one the HNSW index cannot serve.
    partition = f"datastore_chunks_{uuid.UUID(big_datastore.id).hex}"
    for generic in (False, True):
        nodes = explain_search(app, big_datastore.id, generic, exact=True)
        assert [n["Node Type"] for n in nodes if n.get("Relation Name") == partition] == [
            "Seq Scan"
        ], f"generic={generic}"


def test_exact_search_stays_exact_after_many_approximate_ones(
    client: Client, big_datastore: pb.Datastore
) -> None:
    # Approximate queries of the same shape run first, often enough for psycopg to
    # prepare the statement and PostgreSQL to cache a plan that walks the index; a
    # small ef_search makes that walk miss neighbours. Exact answers must not change.
    client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=big_datastore.id, config=pb.DatastoreConfig(hnsw=pb.HnswConfig(ef_search=1))
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["config.hnsw.ef_search"]),
        )
    )
    # the vectors big_datastore stored (analyzed_datastore's generator and seed)
    stored = np.random.default_rng(3).normal(size=(4000, DIMS)).astype(np.float32)
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    queries = np.random.default_rng(11).normal(size=(12, DIMS)).astype(np.float32)
    kwargs: dict[str, Any] = {"max_results": 10, "similarity_threshold": 0.0}
    for q in queries:
        for _ in range(2):
            query_vector(client, [big_datastore.id], q.tolist(), **kwargs)
    for q in queries:
        truth = np.argsort(-(unit @ (q / np.linalg.norm(q))), kind="stable")[:10]
        got = query_vector(client, [big_datastore.id], q.tolist(), exact=True, **kwargs)
        assert {h.external_id for h in got.hits} == {f"v{i}" for i in truth}


def test_metric_update_rebuilds_the_index_with_the_new_opclass(
    client: Client, app: App, big_datastore: pb.Datastore
) -> None:
    updated = client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(id=big_datastore.id, similarity_metric=pb.MANHATTAN),
            update_mask=field_mask_pb2.FieldMask(paths=["similarity_metric"]),
        )
    )
    assert updated.similarity_metric == pb.MANHATTAN
    with app.db.connection() as conn:
        row = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
            (index_name(uuid.UUID(big_datastore.id)),),
        ).fetchone()
    assert row is not None
    assert "vector_l1_ops" in row[0]
    # On 2,000 small vectors the planner may find a seq scan cheaper for L1; with seq
    # scans priced out, the rebuilt index must be the one that serves the new operator.
    nodes = explain_search(app, big_datastore.id, generic=False, forbid_seqscan=True)
    assert index_name(uuid.UUID(big_datastore.id)) in [n.get("Index Name") for n in nodes]
    got = query_vector(
        client, [big_datastore.id], [0.0] * DIMS, exact=True, similarity_threshold=0.0
    )
    assert all(abs(h.score - 1 / (1 + h.distance)) < 1e-9 for h in got.hits)


def test_update_fields_and_guard_the_model_of_a_non_empty_datastore(client: Client) -> None:
    ds = vector_datastore(client, pb.COSINE, 2)
    updated = client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=ds.id,
                name="renamed",
                similarity_threshold=0.25,
                max_results=7,
                config=pb.DatastoreConfig(hnsw=pb.HnswConfig(ef_search=200)),
            ),
            update_mask=field_mask_pb2.FieldMask(
                paths=["name", "similarity_threshold", "max_results", "config.hnsw.ef_search"]
            ),
        )
    )
    assert (updated.name, updated.similarity_threshold, updated.max_results) == ("renamed", 0.25, 7)
    assert updated.config.hnsw.ef_search == 200
    assert updated.config.dimensions == 2  # untouched config fields are kept
    unchanged = client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=ds.id, config=pb.DatastoreConfig(hnsw=pb.HnswConfig(ef_search=200))
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["config.hnsw.ef_search"]),
        )
    )
    assert unchanged.config == updated.config  # a no-op update is fine too

    # an empty datastore may change dimensions; a non-empty one may not
    resized = client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(id=ds.id, config=pb.DatastoreConfig(dimensions=3)),
            update_mask=field_mask_pb2.FieldMask(paths=["config.dimensions"]),
        )
    )
    assert resized.config.dimensions == 3
    ingest_vectors(client, ds.id, np.array([[1, 0, 0]], np.float32))
    code, msg = status_of(
        lambda: client.datastores.UpdateDatastore(
            pb.UpdateDatastoreRequest(
                datastore=pb.Datastore(id=ds.id, config=pb.DatastoreConfig(dimensions=4)),
                update_mask=field_mask_pb2.FieldMask(paths=["config.dimensions"]),
            )
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot change" in msg
    code, msg = status_of(
        lambda: client.datastores.UpdateDatastore(
            pb.UpdateDatastoreRequest(
                datastore=pb.Datastore(id=ds.id),
                update_mask=field_mask_pb2.FieldMask(paths=["type"]),
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot be updated" in msg


def test_embeddings_stay_in_the_row_and_long_text_goes_to_toast(client: Client, app: App) -> None:
    # A 384-dimension vector with a chunk of incompressible text passes the 2 kB TOAST
    # threshold; the text must be the column moved out, so an exact scan reads vectors
    # from the table itself (migration 0004).
    ds = vector_datastore(client, pb.COSINE, 384)
    rng = np.random.default_rng(5)
    docs = [
        pb.DocumentInput(
            external_id=f"t{i}",
            chunks=[
                pb.ChunkInput(
                    content=" ".join(uuid.uuid4().hex[:8] for _ in range(120)),
                    vector=[float(x) for x in rng.normal(size=384)],
                )
            ],
        )
        for i in range(20)
    ]
    client.ingest.IngestDocuments(pb.IngestDocumentsRequest(datastore_id=ds.id, documents=docs))
    with app.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_column_toast_chunk_id(embedding) IS NOT NULL),"
            " count(*) FILTER (WHERE pg_column_toast_chunk_id(content) IS NOT NULL)"
            f" FROM public.datastore_chunks_{uuid.UUID(ds.id).hex}"
        ).fetchone()
    assert row == (0, 20)
