"""Concurrent writers against the real database, on real threads: batches that share
documents never deadlock, a config change racing an ingest never stores mismatched
vectors, and the conflicts PostgreSQL does report come back ABORTED (retryable)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2

from service import errors
from service.api.errors import status_for
from service.app import App
from service.client import Client, pb
from service.errors import Aborted, FailedPrecondition
from service.models import ChunkInput, DocumentInput, Role
from tests.helpers.rpc import vector_datastore

DIMS = 8


def run_together(*calls: Callable[[], object]) -> list[grpc.StatusCode]:
    """Start the calls at once on their own threads; their status codes, in order."""
    barrier = threading.Barrier(len(calls))
    codes: list[grpc.StatusCode] = [grpc.StatusCode.UNKNOWN] * len(calls)

    def run(i: int, call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
            codes[i] = grpc.StatusCode.OK
        except grpc.RpcError as e:
            codes[i] = e.code()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return codes


def docs(ids: list[str], version: int) -> list[pb.DocumentInput]:
    return [
        pb.DocumentInput(
            external_id=e,
            chunks=[pb.ChunkInput(content=f"{e} v{version}", vector=[float(version + 1)] * DIMS)],
        )
        for e in ids
    ]


def test_batches_sharing_documents_in_opposite_orders_never_deadlock(client: Client) -> None:
    ds_id = vector_datastore(client, dimensions=DIMS).id
    ids = [f"doc-{i:03d}" for i in range(60)]
    for version in range(8):  # new content each round: every row is written again

        def ingest(order: list[str], v: int = version) -> Callable[[], object]:
            request = pb.IngestDocumentsRequest(datastore_id=ds_id, documents=docs(order, v))
            return lambda: client.ingest.IngestDocuments(request, timeout=30)

        codes = run_together(ingest(ids), ingest(ids[::-1]), ingest(ids[1::2] + ids[::2]))
        assert codes == [grpc.StatusCode.OK] * 3, (version, codes)
    listed = client.ingest.ListDocuments(pb.ListDocumentsRequest(datastore_id=ds_id, page_size=100))
    assert sorted(d.external_id for d in listed.documents) == ids


def update_dimensions(client: Client, ds_id: str, dims: int) -> Callable[[], object]:
    request = pb.UpdateDatastoreRequest(
        datastore=pb.Datastore(id=ds_id, config=pb.DatastoreConfig(dimensions=dims)),
        update_mask=field_mask_pb2.FieldMask(paths=["config.dimensions"]),
    )
    return lambda: client.datastores.UpdateDatastore(request, timeout=30)


def mismatched_vectors(app: App, ds_id: str) -> int:
    """Chunks whose vectors do not have the datastore's (current) dimensions."""
    with app.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM datastore_chunks c JOIN datastores d ON d.id = c.datastore_id"
            " WHERE c.datastore_id = %s"
            " AND vector_dims(c.embedding) <> (d.config->>'dimensions')::int",
            (ds_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_dimension_change_racing_an_ingest_never_stores_mismatched_vectors(
    app: App, client: Client
) -> None:
    ok, precondition = grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION
    outcomes = set()
    for _ in range(12):
        ds_id = vector_datastore(client, dimensions=DIMS).id
        request = pb.IngestDocumentsRequest(datastore_id=ds_id, documents=docs(["a", "b"], 0))
        ingest, update = run_together(
            lambda r=request: client.ingest.IngestDocuments(r, timeout=30),  # type: ignore[misc]
            update_dimensions(client, ds_id, 2 * DIMS),
        )
        outcomes.add((ingest, update))
        # One of them wins: the other finds the datastore changed (or no longer empty).
        assert (ingest, update) in {
            (ok, precondition),
            (precondition, ok),
            (grpc.StatusCode.INVALID_ARGUMENT, ok),  # it read the new dimensions first
        }, (ingest, update)
        assert mismatched_vectors(app, ds_id) == 0


def test_an_ingest_rechecks_the_datastore_under_its_lock(app: App, client: Client) -> None:
    """The window the race above may miss: vectors prepared for 8 dimensions, the
    datastore changed to 16 before they are written."""
    ds_id = vector_datastore(client, dimensions=DIMS).id
    user_id = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    principal = app.identity.authenticate(app.identity.create_key(user_id, Role.SERVICE).key)
    prepared_for = app.ingestion.datastore_for_write(principal, uuid.UUID(ds_id))
    update_dimensions(client, ds_id, 2 * DIMS)()
    vector = np.ones(DIMS, dtype=np.float32)
    doc = DocumentInput("a", chunks=(ChunkInput("a", vector),))
    with pytest.raises(FailedPrecondition, match="changed its embedding model or dimensions"):
        app.ingestion.write(prepared_for, [doc])
    assert mismatched_vectors(app, ds_id) == 0


def lock_in_order(
    app: App, keys: tuple[int, int], barrier: threading.Barrier
) -> Callable[[], None]:
    def run() -> None:
        with app.db.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (keys[0],))
            barrier.wait()
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (keys[1],))

    return run


def test_a_deadlock_the_database_breaks_is_aborted(app: App) -> None:
    barrier = threading.Barrier(2)
    first, second = (hash(uuid.uuid4()) % 1_000_000 for _ in range(2))
    raised: list[BaseException] = []

    def run(keys: tuple[int, int]) -> None:
        try:
            lock_in_order(app, keys, barrier)()
        except Exception as e:
            raised.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in [(first, second), (second, first)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(raised) == 1 and isinstance(raised[0], Aborted), raised
    assert status_for(raised[0])[0] == grpc.StatusCode.ABORTED


def test_a_lock_wait_timeout_is_aborted(app: App) -> None:
    key = hash(uuid.uuid4()) % 1_000_000
    with app.db.connection() as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        with pytest.raises(Aborted), app.db.connection() as waiter:
            waiter.execute("SET LOCAL lock_timeout = '50ms'")
            waiter.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Cancelled("x"), grpc.StatusCode.CANCELLED),
        (errors.Aborted("x"), grpc.StatusCode.ABORTED),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_the_status_table_has_the_database_conditions(
    error: errors.RetrievalError, code: grpc.StatusCode
) -> None:
    assert status_for(error) == (code, "x")
