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
from service.storage import search
from service.storage.partitions import index_name
from tests.conftest import ingest_vectors, query_vector, status_of, vector_datastore

DIMS = 32


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += plan_nodes(child)
    return out


def explain_search(
    app: App, ds_id: str, generic: bool, *, forbid_seqscan: bool = False
) -> list[dict[str, Any]]:
    """EXPLAIN the exact SQL and settings the query path runs."""
    with app.db.connection() as conn:
        datastore = datastore_rows.get(conn, uuid.UUID(ds_id))
        assert datastore is not None
        if forbid_seqscan:
            conn.execute("SET LOCAL enable_seqscan = off")
        if generic:
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        conn.execute("SELECT set_config('hnsw.ef_search', '100', true)")
        vector = np.ones(DIMS, dtype=np.float32)
        query, params = search.build_query(datastore, vector, 10, 0.5)
        row = conn.execute(b"EXPLAIN (FORMAT JSON) " + query.as_bytes(conn), params).fetchone()
    assert row is not None
    doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return plan_nodes(doc[0]["Plan"])


@pytest.fixture
def big_datastore(client: Client, app: App) -> pb.Datastore:
    ds = vector_datastore(client, pb.COSINE, DIMS)
    rng = np.random.default_rng(3)
    ingest_vectors(client, ds.id, rng.normal(size=(4000, DIMS)).astype(np.float32))
    # Fresh statistics either way, so the plan does not depend on whether autovacuum
    # has analyzed the new partition yet.
    with app.db.connection() as conn:
        conn.execute(f"ANALYZE datastore_chunks_{uuid.UUID(ds.id).hex}")
    return ds


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
def test_query_uses_the_datastores_hnsw_index(
    app: App, big_datastore: pb.Datastore, generic: bool
) -> None:
    nodes = explain_search(app, big_datastore.id, generic)
    partition = f"datastore_chunks_{uuid.UUID(big_datastore.id).hex}"
    chunk_scans = [n for n in nodes if n.get("Relation Name") == partition]
    assert [(n["Node Type"], n.get("Index Name")) for n in chunk_scans] == [
        ("Index Scan", index_name(uuid.UUID(big_datastore.id)))
    ]


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
