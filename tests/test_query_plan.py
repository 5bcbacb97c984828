"""The query path uses the datastore's own HNSW index; updates rebuild it for a new metric."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2

from service.app import App
from service.client import Client, pb
from service.storage import datastores as datastore_rows
from service.storage import vector_search
from service.storage.partitions import index_name
from tests.helpers.rpc import ingest_vectors, query_vector, status_of, vector_datastore

DIMS = 32


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += plan_nodes(child)
    return out


def explain_search(
    app: App,
    ds_id: str,
    generic: bool,
    *,
    forbid_seqscan: bool = False,
    dims: int = DIMS,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """EXPLAIN the exact SQL and settings the query path runs."""
    with app.db.connection() as conn:
        datastore = datastore_rows.get(conn, uuid.UUID(ds_id))
        assert datastore is not None
        if forbid_seqscan:
            conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SELECT set_config('hnsw.ef_search', '100', true)")
        vector = np.ones(dims, dtype=np.float32)
        query, params = vector_search.build_query(datastore, vector, 10, 0.5, exact=exact)
        if generic:
            # The plan a prepared statement may settle on: planned once for any
            # parameter values, which appear as $1, $2, ...
            text = query.as_string(conn)
            for number, name in enumerate(params, start=1):
                text = text.replace(f"%({name})s", f"${number}")
            row = conn.execute(f"EXPLAIN (GENERIC_PLAN, FORMAT JSON) {text}".encode()).fetchone()
        else:
            row = conn.execute(b"EXPLAIN (FORMAT JSON) " + query.as_bytes(conn), params).fetchone()
    assert row is not None
    doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return plan_nodes(doc[0]["Plan"])


def analyzed_datastore(client: Client, app: App, rows: int, dims: int) -> pb.Datastore:
    ds = vector_datastore(client, pb.COSINE, dims)
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


def test_prepared_query_uses_the_index_too_at_the_bundled_models_width(
    client: Client, app: App
) -> None:
    # 4,000 chunks of 384 dimensions: a one-off plan walks the index. A prepared
    # statement's generic plan that does not know the LIMIT prices it at a tenth of the
    # rows and sorts the whole partition instead (measured ten times slower); the limit
    # is written into the statement so that it cannot.
    ds = analyzed_datastore(client, app, 4000, 384)
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
