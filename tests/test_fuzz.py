"""Property-based requests to every RPC: whatever arrives, the answer is never INTERNAL or
UNKNOWN, and the server is still SERVING afterwards.

Requests mix valid ids (the caller's own), ids of another user, random and malformed
ids; strings with NULs, astral characters and great lengths; huge and negative numbers;
random ``Struct`` filters and metadata; random page tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import App
from service.client import pb
from tests.helpers.fuzz_world import (
    World,
    assert_serving,
    expect_no_internal,
    make_world,
    resolve,
    token_of,
)
from tests.helpers.rpc import struct

EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def world(app: App, target: str) -> Iterator[World]:
    with make_world(app, target) as w:
        yield w


# ------------------------------------------------------------------ strategies

SPECIAL_STRINGS = [
    "",
    "\x00",
    "a\x00b",
    "\U0001d518\U0001f600",
    "none",
    "/etc",
    "sentence-transformers/all-MiniLM-L6-v2",
    "pgvector",
    "pinecone",
]
strings = st.one_of(
    st.text(max_size=40),
    st.sampled_from(SPECIAL_STRINGS),
    st.integers(201, 5000).map(lambda n: "x" * n),  # past every length limit
)
int32s = st.one_of(
    st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, -1, 1, 2, 8, 500, 1000, 1001])
)
doubles = st.one_of(st.floats(), st.sampled_from([0.0, 0.5, 1.0, -0.0, 1e308, -1e308]))
json_scalars = st.one_of(st.none(), st.booleans(), doubles, strings)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(strings, st.sampled_from(["$eq", "$in", "$and", "$or", "$not", "$gt"])),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(strings, json_values, max_size=4)


structs = json_objects.map(struct)


page_tokens = st.one_of(
    strings,
    st.sampled_from([["x", "y"], [True, 1], [{}, {}], ["2024-01-01", "nope"], [None], ["a"]]).map(
        token_of
    ),
    st.lists(json_values, max_size=3).map(token_of),
    st.sampled_from(["!!!", "e30=", "W10=", "bnVsbA==", "=" * 8]),
)


def ids(kind: str) -> st.SearchStrategy[str]:
    """An id for ``kind`` (``datastore``, ``byo`` or ``agent``), resolved against the world."""
    return st.one_of(
        st.sampled_from([f"own:{kind}", f"foreign:{kind}", "", "not-a-uuid", "\x00"]),
        st.uuids().map(str),
        strings,
    )


configs = st.builds(
    pb.DatastoreConfig,
    embedding_model=strings,
    dimensions=int32s,
    chunk_size=int32s,
    chunk_overlap=st.one_of(st.none(), int32s),
    search_mode=st.integers(-2, 5),
    hnsw=st.builds(pb.HnswConfig, m=int32s, ef_construction=int32s, ef_search=int32s),
    low_confidence_fallback=st.one_of(st.none(), st.booleans()),
    text_search_config=strings,
    rrf_k=int32s,
    bm25_k1=st.one_of(st.none(), doubles),
    bm25_b=st.one_of(st.none(), doubles),
)
vectors = st.lists(st.floats(width=32), max_size=4)
chunks = st.builds(pb.ChunkInput, content=strings, vector=vectors, metadata=structs)
documents = st.builds(
    pb.DocumentInput,
    external_id=strings,
    title=strings,
    source=strings,
    text=strings,
    chunks=st.lists(chunks, max_size=2),
    metadata=structs,
)
MASK_PATHS = (
    "name",
    "description",
    "similarity_metric",
    "similarity_threshold",
    "max_results",
    "config.embedding_model",
    "config.chunk_size",
    "config.hnsw.m",
    "config",
)
mask_paths = st.lists(
    st.one_of(
        strings,
        st.sampled_from(MASK_PATHS),
    ),
    max_size=3,
)


# ------------------------------------------------------------------ DatastoreService


@EXAMPLES
@given(
    name=strings,
    description=strings,
    type_=strings,
    config=configs,
    metric=st.integers(-2, 6),
    threshold=st.one_of(st.none(), doubles),
    max_results=st.one_of(st.none(), int32s),
)
def test_create_datastore(world: World, **f: Any) -> None:
    request = pb.CreateDatastoreRequest(
        name=f["name"],
        description=f["description"],
        type=f["type_"],
        config=f["config"],
        similarity_metric=f["metric"],
        similarity_threshold=f["threshold"],
        max_results=f["max_results"],
    )
    expect_no_internal(lambda: world.client.datastores.CreateDatastore(request))


@EXAMPLES
@given(id_=ids("datastore"))
def test_get_datastore(world: World, id_: str) -> None:
    request = pb.GetDatastoreRequest(id=resolve(world, id_))
    expect_no_internal(lambda: world.client.datastores.GetDatastore(request))


@EXAMPLES
@given(size=int32s, token=page_tokens)
def test_list_datastores(world: World, size: int, token: str) -> None:
    request = pb.ListDatastoresRequest(page_size=size, page_token=token)
    expect_no_internal(lambda: world.client.datastores.ListDatastores(request))


@EXAMPLES
@given(
    id_=st.one_of(ids("byo"), st.just("fresh:datastore")),
    name=strings,
    description=strings,
    config=configs,
    metric=st.integers(-2, 6),
    threshold=doubles,
    max_results=int32s,
    paths=mask_paths,
)
def test_update_datastore(world: World, **f: Any) -> None:
    request = pb.UpdateDatastoreRequest(
        datastore=pb.Datastore(
            id=resolve(world, f["id_"]),
            name=f["name"],
            description=f["description"],
            config=f["config"],
            similarity_metric=f["metric"],
            similarity_threshold=f["threshold"],
            max_results=f["max_results"],
        ),
        update_mask=field_mask_pb2.FieldMask(paths=f["paths"]),
    )
    expect_no_internal(lambda: world.client.datastores.UpdateDatastore(request))


@EXAMPLES
@given(
    id_=st.one_of(
        ids("datastore").filter(lambda v: v != "own:datastore"), st.just("fresh:datastore")
    )
)
def test_delete_datastore(world: World, id_: str) -> None:
    request = pb.DeleteDatastoreRequest(id=resolve(world, id_))
    expect_no_internal(lambda: world.client.datastores.DeleteDatastore(request))


# ------------------------------------------------------------------ AgentService


@EXAMPLES
@given(name=strings, description=strings, system=strings, assistant=strings, active=st.booleans())
def test_create_agent(world: World, **f: Any) -> None:
    request = pb.CreateAgentRequest(
        name=f["name"],
        description=f["description"],
        system_instructions=f["system"],
        assistant_instructions=f["assistant"],
        active=f["active"],
    )
    expect_no_internal(lambda: world.client.agents.CreateAgent(request))


@EXAMPLES
@given(id_=ids("agent"))
def test_get_agent(world: World, id_: str) -> None:
    request = pb.GetAgentRequest(id=resolve(world, id_))
    expect_no_internal(lambda: world.client.agents.GetAgent(request))


@EXAMPLES
@given(size=int32s, token=page_tokens)
def test_list_agents(world: World, size: int, token: str) -> None:
    request = pb.ListAgentsRequest(page_size=size, page_token=token)
    expect_no_internal(lambda: world.client.agents.ListAgents(request))


@EXAMPLES
@given(id_=st.one_of(ids("agent").filter(lambda v: v != "own:agent"), st.just("fresh:agent")))
def test_delete_agent(world: World, id_: str) -> None:
    request = pb.DeleteAgentRequest(id=resolve(world, id_))
    expect_no_internal(lambda: world.client.agents.DeleteAgent(request))


@EXAMPLES
@given(agent=ids("agent"), datastore=st.one_of(ids("datastore"), ids("byo")))
def test_attach_and_detach_datastore(world: World, agent: str, datastore: str) -> None:
    pair = {"agent_id": resolve(world, agent), "datastore_id": resolve(world, datastore)}
    expect_no_internal(
        lambda: world.client.agents.AttachDatastore(pb.AttachDatastoreRequest(**pair))
    )
    if pair != {"agent_id": world.own["agent"], "datastore_id": world.own["datastore"]}:
        expect_no_internal(
            lambda: world.client.agents.DetachDatastore(pb.DetachDatastoreRequest(**pair))
        )


@EXAMPLES
@given(id_=ids("agent"))
def test_list_agent_datastores(world: World, id_: str) -> None:
    request = pb.ListAgentDatastoresRequest(agent_id=resolve(world, id_))
    expect_no_internal(lambda: world.client.agents.ListAgentDatastores(request))


# ------------------------------------------------------------------ IngestService


@EXAMPLES
@given(datastore=st.one_of(ids("datastore"), ids("byo")), docs=st.lists(documents, max_size=3))
def test_ingest_documents(world: World, datastore: str, docs: list[pb.DocumentInput]) -> None:
    request = pb.IngestDocumentsRequest(datastore_id=resolve(world, datastore), documents=docs)
    expect_no_internal(lambda: world.client.ingest.IngestDocuments(request))


@EXAMPLES
@given(
    messages=st.lists(
        st.tuples(st.one_of(ids("datastore"), ids("byo")), st.one_of(st.none(), documents)),
        max_size=3,
    )
)
def test_stream_ingest(world: World, messages: list[tuple[str, pb.DocumentInput | None]]) -> None:
    requests = [
        pb.StreamIngestRequest(datastore_id=resolve(world, ds), document=doc)
        for ds, doc in messages
    ]
    expect_no_internal(lambda: list(world.client.ingest.StreamIngest(iter(requests))))


@EXAMPLES
@given(
    datastore=ids("datastore"), external_id=st.one_of(strings, st.just("doc")), chunks=st.booleans()
)
def test_get_document(world: World, datastore: str, external_id: str, chunks: bool) -> None:
    request = pb.GetDocumentRequest(
        datastore_id=resolve(world, datastore), external_id=external_id, include_chunks=chunks
    )
    expect_no_internal(lambda: world.client.ingest.GetDocument(request))


@EXAMPLES
@given(datastore=ids("datastore"), size=int32s, token=page_tokens)
def test_list_documents(world: World, datastore: str, size: int, token: str) -> None:
    request = pb.ListDocumentsRequest(
        datastore_id=resolve(world, datastore), page_size=size, page_token=token
    )
    expect_no_internal(lambda: world.client.ingest.ListDocuments(request))


@EXAMPLES
@given(
    datastore=st.one_of(ids("byo"), st.just("foreign:datastore")),
    external_ids=st.lists(st.one_of(strings, st.just("doc")), max_size=4),
)
def test_delete_documents(world: World, datastore: str, external_ids: list[str]) -> None:
    request = pb.DeleteDocumentsRequest(
        datastore_id=resolve(world, datastore), external_ids=external_ids
    )
    expect_no_internal(lambda: world.client.ingest.DeleteDocuments(request))


# ------------------------------------------------------------------ RetrievalService


@EXAMPLES
@given(
    datastores=st.one_of(st.none(), st.lists(st.one_of(ids("datastore"), ids("byo")), max_size=3)),
    agent=ids("agent"),
    text=st.one_of(st.none(), strings),
    vector=vectors,
    max_results=st.one_of(st.none(), int32s),
    threshold=st.one_of(st.none(), doubles),
    filter_=st.one_of(st.just({}), json_objects),
    mode=st.integers(-2, 5),
    flags=st.tuples(st.booleans(), st.booleans()),
)
def test_query(world: World, **f: Any) -> None:
    request = pb.QueryRequest(
        max_results=f["max_results"],
        similarity_threshold=f["threshold"],
        filter=struct(f["filter_"]),
        mode=f["mode"],
        distinct_documents=f["flags"][0],
        exact=f["flags"][1],
    )
    if f["datastores"] is None:
        request.agent_id = resolve(world, f["agent"])
    else:
        request.datastores.ids.extend(resolve(world, d) for d in f["datastores"])
    if f["text"] is None:
        request.vector.values.extend(f["vector"])
    else:
        request.text = f["text"]
    expect_no_internal(lambda: world.client.retrieval.Query(request))


def test_the_server_is_serving_after_the_fuzzing(target: str, world: World) -> None:
    assert_serving(target, world)
