"""HNSW builds over existing rows get their own memory, workers and time (SET LOCAL)."""

from __future__ import annotations

from uuid import UUID

import numpy as np
import psycopg
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from service.client import Client, pb
from service.core.datastore_config import index_build_resources
from service.models import HnswParams, Metric, VectorPrecision
from service.settings import Settings
from service.storage import partitions
from tests.helpers.rpc import ingest_vectors, query_vector, vector_datastore

SETTINGS = ("maintenance_work_mem", "max_parallel_maintenance_workers", "statement_timeout")


def _show(conn: psycopg.Connection) -> list[str]:
    return [str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in SETTINGS]  # type: ignore[index]


def test_build_resources_hold_for_the_building_transaction_only(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        before = _show(conn)
        conn.commit()
        partitions.set_build_resources(conn, partitions.BuildResources(777, 3, 12.5))
        assert _show(conn) == ["777MB", "3", "12500ms"]
        conn.commit()
        assert _show(conn) == before


def test_settings_become_the_build_resources() -> None:
    settings = Settings(
        index_build_memory_mb=2048, index_build_parallel_workers=4, index_build_timeout_s=90
    )
    assert index_build_resources(settings) == partitions.BuildResources(2048, 4, 90.0)
    with pytest.raises(ValueError, match="index_build_memory_mb"):
        Settings(index_build_memory_mb=8)


def test_a_build_runs_under_its_own_statement_timeout(client: Client, pg_url: str) -> None:
    """A 1 ms build timeout cancels the build: the SET LOCAL reaches CREATE INDEX."""
    ds = vector_datastore(client, dimensions=64)
    ingest_vectors(client, ds.id, np.random.default_rng(3).normal(size=(2000, 64)))
    hnsw = HnswParams(16, 64, 100)
    with psycopg.connect(pg_url) as conn:
        partitions.drop_index(conn, UUID(ds.id))
        with pytest.raises(psycopg.errors.QueryCanceled):
            partitions.create_index(
                conn,
                UUID(ds.id),
                Metric.COSINE,
                64,
                hnsw,
                precision=VectorPrecision.FLOAT32,
                resources=partitions.BuildResources(64, 0, 0.001),
            )


def test_an_hnsw_change_rebuilds_the_index_over_existing_rows(client: Client) -> None:
    ds = vector_datastore(client, dimensions=16)
    vectors = np.random.default_rng(4).normal(size=(300, 16))
    ingest_vectors(client, ds.id, vectors)
    client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(id=ds.id, config=pb.DatastoreConfig(hnsw=pb.HnswConfig(m=8))),
            update_mask=FieldMask(paths=["config.hnsw.m"]),
        )
    )
    reply = query_vector(client, [ds.id], [float(x) for x in vectors[7]], max_results=1)
    assert reply.hits[0].external_id == "v7"
