"""StreamIngest: per-document results, batching across documents, failures, flow control."""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from uuid import UUID

import grpc
import pytest
from google.protobuf import struct_pb2

from service.app import App
from service.client import Client, pb
from service.core.stream_ingest import StreamIngest, StreamItem, StreamLimits
from service.models import ChunkInput, Datastore, DocumentInput, IngestStatus, Principal, Role
from tests.helpers.rows import row_counts
from tests.helpers.rpc import (
    status_of,
    stream_ingest_threads,
    text_datastore,
    vector_datastore,
)


def requests(ds_id: str, docs: Iterable[pb.DocumentInput]) -> Iterator[pb.StreamIngestRequest]:
    for i, doc in enumerate(docs):
        # the datastore id is required on the first message only
        yield pb.StreamIngestRequest(datastore_id=ds_id if i == 0 else "", document=doc)


def stream(client: Client, ds_id: str, docs: Iterable[pb.DocumentInput]) -> list[pb.DocumentResult]:
    return list(client.ingest.StreamIngest(requests(ds_id, docs)))


def doc(external_id: str, text: str, **fields: object) -> pb.DocumentInput:
    return pb.DocumentInput(external_id=external_id, text=text, **fields)  # type: ignore[arg-type]


TEXTS = [f"Document {i} is about {topic}." for i, topic in enumerate(["cells", "stars", "rivers"])]


# ------------------------------------------------------------------ over gRPC


def test_stream_created_unchanged_updated(client: Client, app: App) -> None:
    ds = text_datastore(client, "stream")
    docs = [doc(f"d{i}", t, title=f"T{i}") for i, t in enumerate(TEXTS)]
    first = stream(client, ds.id, docs)
    assert [(r.external_id, r.status) for r in first] == [(f"d{i}", pb.CREATED) for i in range(3)]
    assert all(r.document_id and r.chunk_count == 1 and not r.error for r in first)
    assert row_counts(app, ds.id).stored == (3, 3, 3)

    again = stream(client, ds.id, docs)
    assert [r.status for r in again] == [pb.UNCHANGED] * 3
    assert [(r.document_id, r.chunk_count) for r in again] == [
        (r.document_id, r.chunk_count) for r in first
    ]

    docs[1] = doc("d1", "Document 1 is now about galaxies.", title="T1")
    third = stream(client, ds.id, docs)
    assert [r.status for r in third] == [pb.UNCHANGED, pb.UPDATED, pb.UNCHANGED]
    assert third[1].document_id == first[1].document_id
    got = client.ingest.GetDocument(
        pb.GetDocumentRequest(datastore_id=ds.id, external_id="d1", include_chunks=True)
    )
    assert [c.content for c in got.chunks] == ["Document 1 is now about galaxies."]
    stored = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds.id))
    assert (stored.document_count, stored.chunk_count) == (3, 3)


def test_long_document_chunk_counts_match(client: Client, app: App) -> None:
    ds = text_datastore(client, "stream", chunk_size=32, chunk_overlap=4)
    long_text = " ".join(f"Sentence {i} mentions topic {i % 5}." for i in range(60))
    results = stream(client, ds.id, [doc("long", long_text), doc("short", "A short one.")])
    assert [r.status for r in results] == [pb.CREATED, pb.CREATED]
    assert results[0].chunk_count > 5 and results[1].chunk_count == 1
    docs, chunk_rows, declared = row_counts(app, ds.id).stored
    assert docs == 2 and chunk_rows == declared == results[0].chunk_count + 1


def test_bad_documents_fail_alone(client: Client, app: App) -> None:
    ds = text_datastore(client, "stream")
    results = stream(
        client,
        ds.id,
        [
            doc("ok1", "Fine text."),
            doc("", "No id."),
            doc("empty", "   "),
            doc("nul\x00id", "NUL in the id."),
            pb.DocumentInput(external_id="both", text="x", chunks=[pb.ChunkInput(content="y")]),
            doc("ok2", "More fine text."),
        ],
    )
    assert [r.status for r in results] == [
        pb.CREATED,
        pb.FAILED,
        pb.FAILED,
        pb.FAILED,
        pb.FAILED,
        pb.CREATED,
    ]
    assert "external_id is required" in results[1].error
    assert "documents[2] has no text" in results[2].error
    assert "NUL" in results[3].error
    assert "either text or chunks" in results[4].error
    assert row_counts(app, ds.id).stored == (2, 2, 2)


def test_caller_vectors_and_wrong_dimensions(client: Client, app: App) -> None:
    ds = vector_datastore(client, dimensions=4)
    good = pb.DocumentInput(
        external_id="v1",
        chunks=[
            pb.ChunkInput(content="first", vector=[1, 0, 0, 0]),
            pb.ChunkInput(content="second", vector=[0, 1, 0, 0]),
        ],
    )
    short = pb.DocumentInput(
        external_id="v2", chunks=[pb.ChunkInput(content="x", vector=[1, 0, 0])]
    )
    nan = pb.DocumentInput(
        external_id="v3", chunks=[pb.ChunkInput(content="x", vector=[1, math.nan, 0, 0])]
    )
    text = doc("v4", "text needs a model")
    results = stream(client, ds.id, [good, short, nan, text])
    assert [r.status for r in results] == [pb.CREATED, pb.FAILED, pb.FAILED, pb.FAILED]
    assert results[0].chunk_count == 2
    assert "dimensions" in results[1].error
    assert "NaN" in results[2].error
    assert "embedding_model 'none'" in results[3].error
    assert row_counts(app, ds.id).stored == (1, 2, 2)


def test_unreadable_document_fails_alone(client: Client, app: App) -> None:
    ds = text_datastore(client, "stream")
    bad_meta = struct_pb2.Struct()
    bad_meta.update({"score": math.nan})  # a Struct cannot carry NaN into JSON
    docs = [
        doc("before", "Written before the bad one."),
        doc("bad", "Its metadata cannot be read.", metadata=bad_meta),
        doc("after", "Written after the bad one."),
    ]
    results = stream(client, ds.id, docs)
    assert [r.status for r in results] == [pb.CREATED, pb.FAILED, pb.CREATED]
    assert "documents[1].metadata holds NaN" in results[1].error
    assert row_counts(app, ds.id).stored == (2, 2, 2)


def test_database_refusal_fails_alone(client: Client, app: App) -> None:
    """A document the database refuses fails alone; its batch-mates are committed."""
    ds = text_datastore(client, "stream")
    refused = f"refused-{uuid.uuid4()}"
    docs = [
        doc("before", "Written before the bad one."),
        doc(refused, "The database refuses this one."),
        doc("after", "Written after the bad one."),
    ]
    # Valid input the service cannot foresee being refused: a rule the database
    # enforces (as an operator's constraint would).
    with app.db.connection() as conn:
        conn.execute(
            f"ALTER TABLE datastore_documents ADD CONSTRAINT test_refusal"
            f" CHECK (external_id <> '{refused}')"
        )
    try:
        results = stream(client, ds.id, docs)
    finally:
        with app.db.connection() as conn:
            conn.execute("ALTER TABLE datastore_documents DROP CONSTRAINT test_refusal")
    assert [r.status for r in results] == [pb.CREATED, pb.FAILED, pb.CREATED]
    assert "test_refusal" in results[1].error
    assert row_counts(app, ds.id).stored == (2, 2, 2)


def test_later_message_for_another_datastore_fails(client: Client, app: App) -> None:
    ds = text_datastore(client, "stream")
    other = text_datastore(client, "stream")
    msgs = [
        pb.StreamIngestRequest(datastore_id=ds.id, document=doc("a", "First.")),
        pb.StreamIngestRequest(datastore_id=other.id, document=doc("b", "Elsewhere.")),
        pb.StreamIngestRequest(datastore_id=ds.id, document=doc("c", "Same datastore again.")),
    ]
    results = list(client.ingest.StreamIngest(iter(msgs)))
    assert [r.status for r in results] == [pb.CREATED, pb.FAILED, pb.CREATED]
    assert "one stream writes to one datastore" in results[1].error
    assert row_counts(app, other.id).stored == (0, 0, 0)


def test_repeated_external_id_last_wins(client: Client, app: App) -> None:
    ds = text_datastore(client, "stream")
    results = stream(client, ds.id, [doc("x", "Old words."), doc("x", "New words.")])
    assert [r.status for r in results] == [pb.CREATED, pb.UPDATED]
    got = client.ingest.GetDocument(
        pb.GetDocumentRequest(datastore_id=ds.id, external_id="x", include_chunks=True)
    )
    assert [c.content for c in got.chunks] == ["New words."]
    assert row_counts(app, ds.id).stored == (1, 1, 1)


def test_empty_stream_returns_nothing(client: Client) -> None:
    assert list(client.ingest.StreamIngest(iter([]))) == []


def test_stream_errors_abort_with_a_status(
    client: Client, make_client: Callable[..., Client], target: str
) -> None:
    from service.client import connect

    ds = text_datastore(client, "stream")
    one = [doc("a", "text")]
    code, message = status_of(lambda: stream(client, "", one))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "datastore_id is required" in message
    code, _ = status_of(lambda: stream(client, str(uuid.uuid4()), one))
    assert code == grpc.StatusCode.NOT_FOUND
    stranger = make_client()
    code, _ = status_of(lambda: stream(stranger, ds.id, one))
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
    anonymous = connect(target, None)
    try:
        code, _ = status_of(lambda: stream(anonymous, ds.id, one))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        anonymous.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_client_cancel_stops_the_pipeline(client: Client) -> None:
    ds = vector_datastore(client, dimensions=4)

    def endless() -> Iterator[pb.StreamIngestRequest]:
        for i in itertools.count():
            chunk = pb.ChunkInput(content=f"c{i}", vector=[1, 0, 0, i % 7 + 1])
            yield pb.StreamIngestRequest(
                datastore_id=ds.id, document=pb.DocumentInput(external_id=f"e{i}", chunks=[chunk])
            )

    call = client.ingest.StreamIngest(endless())
    first = next(call)
    assert first.status == pb.CREATED
    assert stream_ingest_threads()
    call.cancel()
    assert _wait_for(lambda: not stream_ingest_threads()), stream_ingest_threads()


# ------------------------------------------------------------------ the core pipeline


@pytest.fixture
def principal_and_datastore(client: Client, app: App) -> tuple[Principal, Datastore]:
    ds = text_datastore(client, "stream")
    with app.db.connection() as conn:
        owner = conn.execute("SELECT user_id FROM datastores WHERE id = %s", (ds.id,)).fetchone()
    assert owner is not None
    principal = Principal(UUID(str(owner[0])), Role.USER)
    return principal, app.ingestion.datastore_for_write(principal, UUID(ds.id))


def test_batches_across_documents_keep_order(
    app: App, principal_and_datastore: tuple[Principal, Datastore]
) -> None:
    _, datastore = principal_and_datastore
    tiny = StreamIngest(app.ingestion, StreamLimits(batch_chunks=3, group=2, read_ahead=2))
    items = [
        StreamItem(DocumentInput(external_id=f"k{i}", text=f"Note {i} about item {i}."))
        for i in range(9)
    ]
    items.insert(4, StreamItem(DocumentInput(external_id="", text="no id")))
    items.append(StreamItem(DocumentInput(external_id="k2", text="k2 again, new words.")))
    results = list(tiny.run(datastore, iter(items)))
    assert [r.external_id for r in results] == [item.document.external_id for item in items]
    statuses = [r.status for r in results]
    assert statuses == [IngestStatus.CREATED] * 4 + [IngestStatus.FAILED] + [
        IngestStatus.CREATED
    ] * 5 + [IngestStatus.UPDATED]
    assert row_counts(app, datastore.id).stored == (9, 9, 9)
    same = [item for item in items if item.document.external_id not in ("", "k2")]
    rerun = list(tiny.run(datastore, iter(same)))
    assert [r.status for r in rerun] == [IngestStatus.UNCHANGED] * 8


def test_slow_reader_bounds_what_is_read(
    app: App, principal_and_datastore: tuple[Principal, Datastore]
) -> None:
    """A caller that sends without reading results is held to a bounded read-ahead."""
    _, datastore = principal_and_datastore
    limits = StreamLimits(batch_chunks=4, batch_documents=4, group=4, read_ahead=4)
    pipeline = StreamIngest(app.ingestion, limits)
    pulled = 0

    def endless() -> Iterator[StreamItem]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield StreamItem(DocumentInput(external_id=f"f{i}", text=f"Flow {i}."))

    results = pipeline.run(datastore, endless())
    assert next(results).status is IngestStatus.CREATED

    def settled() -> bool:
        before = pulled
        time.sleep(0.5)
        return pulled == before

    assert _wait_for(settled)
    # read-ahead + a group being prepared + one open batch + a batch in each of the
    # prepared/embedded queues + one per stage + two finished batches of results
    bound = limits.read_ahead + limits.group + 8 * limits.batch_documents + 1
    assert pulled <= bound
    results.close()
    assert _wait_for(lambda: not stream_ingest_threads())


def test_metadata_json_cannot_hold_fails_alone(
    app: App, principal_and_datastore: tuple[Principal, Datastore]
) -> None:
    _, datastore = principal_and_datastore
    items = [
        StreamItem(DocumentInput(external_id="g0", text="Good zero.")),
        # JSON has no NaN: refused before the database would refuse it
        StreamItem(DocumentInput(external_id="g1", text="Bad one.", metadata={"x": math.nan})),
        StreamItem(DocumentInput(external_id="g2", text="Good two.")),
    ]
    one_batch = StreamIngest(app.ingestion, StreamLimits(group=8))
    results = list(one_batch.run(datastore, iter(items)))
    assert [r.status for r in results] == [
        IngestStatus.CREATED,
        IngestStatus.FAILED,
        IngestStatus.CREATED,
    ]
    assert "documents[1].metadata holds NaN" in results[1].error
    assert row_counts(app, datastore.id).stored == (2, 2, 2)


def test_caller_vector_chunks_through_the_core(
    app: App, client: Client, principal_and_datastore: tuple[Principal, Datastore]
) -> None:
    principal, _ = principal_and_datastore
    ds = vector_datastore(client, dimensions=3)
    datastore = app.ingestion.datastore_for_write(principal, UUID(ds.id))
    import numpy as np

    chunk = ChunkInput("c", np.array([0.5, 0.5, 0.0], dtype=np.float32))
    items = [
        StreamItem(DocumentInput(external_id=f"v{i}", chunks=(chunk, chunk)), ds.id)
        for i in range(5)
    ]
    results = list(StreamIngest(app.ingestion).run(datastore, iter(items)))
    assert [r.chunk_count for r in results] == [2] * 5
    assert row_counts(app, ds.id).stored == (5, 10, 10)
