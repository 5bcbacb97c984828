"""config.hnsw.iterative_scan_max_tuples: through Create/Get/Update and into the SQL of a
filtered search (pgvector's hnsw.max_scan_tuples)."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from service import metadata_filter
from service.app import App
from service.client import Client, pb
from service.storage import datastores as datastore_rows
from service.storage import vector_search
from service.storage.filters import compile_filter

DIMS = 4


def _create(client: Client, tuples: int) -> pb.Datastore:
    return client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name="scan-tuples",
            config=pb.DatastoreConfig(
                embedding_model="none",
                dimensions=DIMS,
                hnsw=pb.HnswConfig(ef_search=40, iterative_scan_max_tuples=tuples),
            ),
        )
    )


def _update(client: Client, ds_id: str, hnsw: pb.HnswConfig, path: str) -> pb.Datastore:
    return client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(id=ds_id, config=pb.DatastoreConfig(hnsw=hnsw)),
            update_mask=field_mask_pb2.FieldMask(paths=[path]),
        )
    )


def _tuples(d: pb.Datastore) -> int:
    return d.config.hnsw.iterative_scan_max_tuples


def test_the_setting_round_trips_through_create_get_and_update(client: Client) -> None:
    created = _create(client, 5000)
    assert _tuples(created) == 5000
    got = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=created.id))
    assert _tuples(got) == 5000

    path = "config.hnsw.iterative_scan_max_tuples"
    updated = _update(client, created.id, pb.HnswConfig(iterative_scan_max_tuples=300), path)
    assert _tuples(updated) == 300
    assert updated.config.hnsw.ef_search == 40  # the mask chose one field of the group
    again = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=created.id))
    assert _tuples(again) == 300

    reset = _update(client, created.id, pb.HnswConfig(), path)  # 0 = the server's rule
    assert _tuples(reset) == 0 and reset.config.hnsw.ef_search == 40

    with pytest.raises(grpc.RpcError) as raised:
        _update(client, created.id, pb.HnswConfig(iterative_scan_max_tuples=-1), path)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == (
        "config.hnsw.iterative_scan_max_tuples must be 0..2147483647, got -1"
    )


def _max_scan_tuples_of_a_filtered_search(app: App, ds_id: str) -> str:
    """hnsw.max_scan_tuples as a filtered search set it, read in the same transaction."""
    tree = metadata_filter.parse({"bucket": {"$lt": 2}})
    assert tree is not None
    with app.db.connection() as conn:
        datastore = datastore_rows.get(conn, uuid.UUID(ds_id))
        assert datastore is not None
        collect = vector_search.submit(
            conn,
            datastore,
            np.ones(DIMS, dtype=np.float32),
            k=3,
            threshold=0.0,
            exact=False,
            where=compile_filter(tree),
        )
        assert len(collect()) == 3
        row = conn.execute("SHOW hnsw.max_scan_tuples").fetchone()
    assert row is not None
    return str(row[0])


def test_a_filtered_search_scans_at_most_that_many_tuples(app: App, client: Client) -> None:
    ds = _create(client, 1234)
    rng = np.random.default_rng(7)
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[
                pb.DocumentInput(
                    external_id=f"d{i}",
                    metadata=struct_pb2.Struct(
                        fields={"bucket": struct_pb2.Value(number_value=i % 4)}
                    ),
                    chunks=[pb.ChunkInput(content=f"c{i}", vector=rng.random(DIMS).tolist())],
                )
                for i in range(40)
            ],
        )
    )
    assert _max_scan_tuples_of_a_filtered_search(app, ds.id) == "1234"
    path = "config.hnsw.iterative_scan_max_tuples"
    _update(client, ds.id, pb.HnswConfig(), path)
    # Unset: the server's rule, a tenth of the chunks but at least 2,000.
    assert _max_scan_tuples_of_a_filtered_search(app, ds.id) == "2000"
