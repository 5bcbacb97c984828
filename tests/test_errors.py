"""Bad input gets the right status and a message a person can act on, and writes nothing."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import grpc
import pytest

from service.api.errors import status_for
from service.app import App
from service.bootstrap import LOCAL_EMAIL, ensure_local_key
from service.client import Client, connect, pb
from service.errors import AlreadyExists, NotFound, ResourceExhausted
from service.models import Role
from tests.helpers.rows import row_counts
from tests.helpers.rpc import query_vector, status_of, vector_datastore

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def doc_with_vector(vector: list[float], external_id: str = "d") -> pb.DocumentInput:
    return pb.DocumentInput(
        external_id=external_id, chunks=[pb.ChunkInput(content="c", vector=vector)]
    )


def ingest_call(client: Client, ds_id: str, *docs: pb.DocumentInput) -> Callable[[], object]:
    return lambda: client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(datastore_id=ds_id, documents=list(docs))
    )


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (pb.CreateDatastoreRequest(name=""), "name is required"),
        (pb.CreateDatastoreRequest(name="x", similarity_threshold=1.5), "between 0 and 1"),
        (pb.CreateDatastoreRequest(name="x", similarity_threshold=-0.1), "between 0 and 1"),
        (pb.CreateDatastoreRequest(name="x", similarity_threshold=math.nan), "between 0 and 1"),
        (pb.CreateDatastoreRequest(name="x", max_results=0), "max_results must be > 0"),
        (pb.CreateDatastoreRequest(name="x", max_results=5000), "at most 1000"),
        (
            pb.CreateDatastoreRequest(name="x", config=pb.DatastoreConfig(embedding_model="none")),
            "dimensions is required",
        ),
        (
            pb.CreateDatastoreRequest(name="x", config=pb.DatastoreConfig(dimensions=100)),
            "does not match model",
        ),
        (
            pb.CreateDatastoreRequest(name="x", config=pb.DatastoreConfig(chunk_size=10_000)),
            "chunk_size must be",
        ),
        (
            pb.CreateDatastoreRequest(
                name="x", config=pb.DatastoreConfig(chunk_size=64, chunk_overlap=64)
            ),
            "chunk_overlap",
        ),
        (
            pb.CreateDatastoreRequest(
                name="x", config=pb.DatastoreConfig(embedding_model="hub/some-remote-model")
            ),
            "choose one of ['sentence-transformers/all-MiniLM-L6-v2', 'all-MiniLM-L6-v2']",
        ),
        (
            pb.CreateDatastoreRequest(
                name="x", config=pb.DatastoreConfig(text_search_config="klingon")
            ),
            "not a text search configuration",
        ),
        (pb.CreateDatastoreRequest(name="x", type="weaviate"), "type must be one of"),
    ],
)
def test_create_datastore_rejects(
    client: Client, request_: pb.CreateDatastoreRequest, fragment: str
) -> None:
    code, msg = status_of(lambda: client.datastores.CreateDatastore(request_))
    assert code == INVALID, msg
    assert fragment in msg
    assert list(client.datastores.ListDatastores(pb.ListDatastoresRequest()).datastores) == []


def test_ids_must_be_uuids_and_exist(client: Client) -> None:
    code, msg = status_of(lambda: client.datastores.GetDatastore(pb.GetDatastoreRequest(id="abc")))
    assert (code, msg) == (INVALID, "id 'abc' is not a valid UUID")
    missing = str(uuid.uuid4())
    code, msg = status_of(
        lambda: client.datastores.GetDatastore(pb.GetDatastoreRequest(id=missing))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert missing in msg
    code, _ = status_of(lambda: query_vector(client, [missing], [1.0, 0.0]))
    assert code == grpc.StatusCode.NOT_FOUND
    code, msg = status_of(
        lambda: client.retrieval.Query(pb.QueryRequest(agent_id="nope", text="hi"))
    )
    assert code == INVALID
    assert "agent_id" in msg


@pytest.mark.parametrize(
    ("vector", "fragment"),
    [
        ([1.0, 0.0, 0.0], "has 3 dimensions; the datastore expects 2"),
        ([math.nan, 1.0], "NaN or infinite"),
        ([math.inf, 1.0], "NaN or infinite"),
        ([0.0, 0.0], "all zeros"),
    ],
)
def test_bad_vectors_are_rejected_on_ingest_and_query(
    client: Client, app: App, vector: list[float], fragment: str
) -> None:
    ds = vector_datastore(client, pb.COSINE, 2)
    code, msg = status_of(ingest_call(client, ds.id, doc_with_vector(vector)))
    assert code == INVALID
    assert fragment in msg
    code, msg = status_of(lambda: query_vector(client, [ds.id], vector))
    assert code == INVALID
    assert fragment in msg
    assert row_counts(app, ds.id).documents == 0


def test_one_bad_document_fails_the_batch_and_writes_nothing(client: Client, app: App) -> None:
    ds = vector_datastore(client, pb.COSINE, 2)
    code, msg = status_of(
        ingest_call(
            client, ds.id, doc_with_vector([1.0, 0.0], "good"), doc_with_vector([1.0], "bad")
        )
    )
    assert code == INVALID
    assert "documents[1]" in msg
    assert row_counts(app, ds.id).documents == 0


def with_nan_metadata(doc: pb.DocumentInput) -> pb.DocumentInput:
    doc.metadata.update({"score": math.nan})
    return doc


def with_nan_chunk_metadata(doc: pb.DocumentInput) -> pb.DocumentInput:
    doc.chunks.add(content="c").metadata.update({"nested": {"x": math.inf}})
    return doc


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (pb.DocumentInput(external_id="", text="x"), "external_id is required"),
        (
            with_nan_metadata(pb.DocumentInput(external_id="e", text="x")),
            "documents[0].metadata holds NaN",
        ),
        (
            with_nan_chunk_metadata(pb.DocumentInput(external_id="e")),
            "documents[0].chunks[0].metadata holds NaN",
        ),
        (pb.DocumentInput(external_id="e", text="   "), "has no text"),
        (pb.DocumentInput(external_id="e", text="nul\x00byte"), "NUL"),
        # 1,000 characters but 3,000 bytes: beyond what the external_id index can hold
        (pb.DocumentInput(external_id="文" * 1000, text="x"), "longer than 1024 bytes"),
        (
            pb.DocumentInput(external_id="e", text="x", chunks=[pb.ChunkInput(content="y")]),
            "either text or chunks",
        ),
    ],
)
def test_bad_documents_are_rejected(
    client: Client, app: App, doc: pb.DocumentInput, fragment: str
) -> None:
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="t"))
    code, msg = status_of(ingest_call(client, ds.id, doc))
    assert code == INVALID
    assert fragment in msg
    assert row_counts(app, ds.id).documents == 0


def test_external_id_of_exactly_1024_bytes_is_stored(client: Client, app: App) -> None:
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="t"))
    external_id = "é" * 512  # two bytes each
    reply = client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id, documents=[pb.DocumentInput(external_id=external_id, text="x")]
        )
    )
    assert [(r.external_id, r.status) for r in reply.results] == [(external_id, pb.CREATED)]
    assert row_counts(app, ds.id).documents == 1


def test_repeated_external_ids_and_empty_batches(client: Client) -> None:
    ds = vector_datastore(client, pb.COSINE, 2)
    d = doc_with_vector([1.0, 0.0], "same")
    code, msg = status_of(ingest_call(client, ds.id, d, d))
    assert (code, "is repeated" in msg) == (INVALID, True)
    code, msg = status_of(ingest_call(client, ds.id))
    assert (code, "must not be empty" in msg) == (INVALID, True)


def test_vector_datastores_need_vectors_and_vector_queries(client: Client) -> None:
    ds = vector_datastore(client, pb.COSINE, 2)
    code, msg = status_of(ingest_call(client, ds.id, pb.DocumentInput(external_id="e", text="x")))
    assert code == INVALID
    assert "send chunks with vectors" in msg
    code, msg = status_of(
        lambda: client.retrieval.Query(
            pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds.id]), text="hello")
        )
    )
    assert code == INVALID
    assert "query it with a vector" in msg


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"similarity_threshold": 1.01}, "between 0 and 1"),
        ({"similarity_threshold": -1.0}, "between 0 and 1"),
        ({"max_results": 0}, "must be > 0"),
        ({"max_results": -3}, "must be > 0"),
        ({"max_results": 1001}, "at most 1000"),
    ],
)
def test_query_overrides_are_validated(
    client: Client, overrides: dict[str, float], fragment: str
) -> None:
    ds = vector_datastore(client, pb.COSINE, 2)
    code, msg = status_of(lambda: query_vector(client, [ds.id], [1.0, 0.0], **overrides))
    assert code == INVALID
    assert fragment in msg


def test_empty_query_text_and_missing_target(client: Client) -> None:
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="t"))
    for text in ("", "   \n"):
        code, msg = status_of(
            partial(
                client.retrieval.Query,
                pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds.id]), text=text),
            )
        )
        assert code == INVALID
        assert "query text is empty" in msg
    code, msg = status_of(lambda: client.retrieval.Query(pb.QueryRequest(text="hello")))
    assert code == INVALID
    assert "target" in msg


def test_pinecone_and_getzep_datastores_are_refused(client: Client, app: App) -> None:
    code, msg = status_of(
        lambda: client.datastores.CreateDatastore(
            pb.CreateDatastoreRequest(name="p", type="pinecone")
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "only 'pgvector'" in msg
    # Agentopia rows of other types share the table: serve none of them.
    owner = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="mine")).user_id
    for kind in ("pinecone", "getzep", "pgvector"):
        with app.db.connection() as conn:
            row = conn.execute(
                "INSERT INTO datastores (user_id, name, type) VALUES (%s, 'agentopia', %s)"
                " RETURNING id",
                (owner, kind),
            ).fetchone()
        assert row is not None
        ds_id = str(row[0])
        for call in (
            lambda ds_id=ds_id: client.retrieval.Query(
                pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds_id]), text="hello")
            ),
            ingest_call(client, ds_id, pb.DocumentInput(external_id="e", text="x")),
        ):
            code, msg = status_of(call)
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            # a pgvector row made by Agentopia has no embedding config: not servable either
            assert f"type {kind!r}" in msg or "no embedding configuration" in msg


def test_credentials_are_required(target: str) -> None:
    for key, fragment in (
        (None, "missing 'authorization"),
        ("agr_not-a-real-key", "unknown or revoked"),
    ):
        anonymous = connect(target, key)
        try:
            code, msg = status_of(
                partial(anonymous.datastores.ListDatastores, pb.ListDatastoresRequest())
            )
        finally:
            anonymous.close()
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert fragment in msg


def test_revoked_key_stops_working(app: App, target: str) -> None:
    user = app.identity.create_user(None)
    issued = app.identity.create_key(user, Role.USER)
    c = connect(target, issued.key)
    try:
        c.datastores.ListDatastores(pb.ListDatastoresRequest())
        assert app.identity.revoke_key(issued.prefix) == 1
        code, _ = status_of(lambda: c.datastores.ListDatastores(pb.ListDatastoresRequest()))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        c.close()


def test_a_second_user_with_the_same_email_already_exists(app: App) -> None:
    email = f"{uuid.uuid4().hex}@test"
    first = app.identity.create_user(email)
    with pytest.raises(AlreadyExists, match="already exists") as raised:
        app.identity.create_user(email)
    assert status_for(raised.value)[0] == grpc.StatusCode.ALREADY_EXISTS
    assert app.identity.find_user(email) == first


def test_the_local_key_goes_to_the_existing_local_user(app: App, tmp_path: Path) -> None:
    try:
        local = app.identity.find_user(LOCAL_EMAIL)
    except NotFound:
        local = app.identity.create_user(LOCAL_EMAIL)
    issued = ensure_local_key(app.identity, tmp_path / "key")
    assert issued is not None and issued.user_id == local
    assert ensure_local_key(app.identity, tmp_path / "key") is None  # the file exists


def test_a_datastore_whose_model_is_no_longer_offered_is_failed_precondition(
    client: Client, app: App
) -> None:
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="t"))
    gone = f"retired-{uuid.uuid4().hex[:8]}"
    with app.db.connection() as conn:  # as if the operator removed the name from RETRIEVAL_MODELS
        conn.execute(
            "UPDATE datastores"
            " SET config = jsonb_set(config, '{embedding_model}', to_jsonb(%s::text))"
            " WHERE id = %s",
            (gone, ds.id),
        )
    code, msg = status_of(ingest_call(client, ds.id, pb.DocumentInput(external_id="e", text="x")))
    assert (code, gone in msg) == (grpc.StatusCode.FAILED_PRECONDITION, True)
    assert row_counts(app, ds.id).documents == 0

    def query_code() -> grpc.StatusCode:
        try:
            client.retrieval.Query(
                pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds.id]), text="anything")
            )
        except grpc.RpcError as e:
            assert "not available on this server" in str(e.details())
            return e.code()
        return grpc.StatusCode.OK

    deadline = time.monotonic() + 5  # the settings cache hears of the change by NOTIFY
    while (code := query_code()) is grpc.StatusCode.OK and time.monotonic() < deadline:
        time.sleep(0.05)
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_a_database_size_limit_is_resource_exhausted_not_unavailable(app: App) -> None:
    # 100,000 distinct 32-character lexemes: past tsvector's 1 MB limit (SQLSTATE 54000)
    with pytest.raises(ResourceExhausted, match="too large"), app.db.connection() as conn:
        conn.execute(
            "SELECT to_tsvector('simple', string_agg(md5(i::text), ' '))"
            " FROM generate_series(1, 100000) i"
        )
    assert app.db.ping()  # the database itself is fine
