"""One Query, four wires: native gRPC, Connect JSON, Connect binary and gRPC-Web agree exactly."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from service.api.http.client import HttpClient
from service.client import connect, pb
from tests.helpers.rpc import struct

WIRES = [("connect", False), ("connect", True), ("grpc-web", True), ("grpc-web", False)]

DOCS = [
    ("pg", "PostgreSQL is a relational database; pgvector adds vector similarity search."),
    ("cat", "Cats sleep for most of the day and hunt at dusk."),
    ("hnsw", "HNSW graphs answer approximate nearest neighbour queries quickly."),
    ("bread", "Sourdough bread rises slowly with wild yeast."),
]


def test_the_same_query_returns_identical_hits_over_every_protocol(
    target: str, new_key: Callable[..., str], http_client: Callable[..., HttpClient]
) -> None:
    key = new_key()
    grpc_client = connect(target, key)
    try:
        ds = grpc_client.datastores.CreateDatastore(
            pb.CreateDatastoreRequest(name="wires", similarity_threshold=0.3, max_results=3)
        )
        grpc_client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=ds.id,
                documents=[
                    pb.DocumentInput(external_id=i, text=t, metadata=struct({"topic": i}))
                    for i, t in DOCS
                ],
            )
        )
        agent = grpc_client.agents.CreateAgent(pb.CreateAgentRequest(name="wires"))
        grpc_client.agents.AttachDatastore(
            pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id)
        )
        requests = [
            pb.QueryRequest(agent_id=agent.id, text="vector search in a database"),
            pb.QueryRequest(
                datastores=pb.DatastoreIds(ids=[ds.id]), text="sleepy animals", max_results=4
            ),
        ]
        expected = [grpc_client.retrieval.Query(r) for r in requests]
    finally:
        grpc_client.close()
    assert expected[0].hits[0].external_id == "pg"
    assert any(h.below_threshold for h in expected[1].hits) or expected[1].hits
    for protocol, binary in WIRES:
        client = http_client(key, protocol, binary)
        for request, want in zip(requests, expected, strict=True):
            got = client.call("RetrievalService", "Query", request)
            assert list(got.hits) == list(want.hits), (protocol, binary)
            assert list(got.datastores) == list(want.datastores), (protocol, binary)


@pytest.mark.parametrize(("protocol", "binary"), WIRES)
def test_errors_carry_the_grpc_code_and_message_over_every_protocol(
    protocol: str, binary: bool, http_client: Callable[..., HttpClient]
) -> None:
    client = http_client("agr_wrong", protocol, binary)
    with pytest.raises(ConnectError) as info:
        client.call("RetrievalService", "Query", pb.QueryRequest(agent_id="x", text="t"))
    assert info.value.code == Code.UNAUTHENTICATED
    assert info.value.message
