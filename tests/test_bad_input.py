"""Malformed input below the message level, and the malformed inputs issue 13 names:
INVALID_ARGUMENT naming the field, never INTERNAL or UNKNOWN."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.app import App
from service.client import Client, pb
from tests.helpers.fuzz_world import World, assert_serving, expect_no_internal, make_world, token_of


@pytest.fixture(scope="module")
def world(app: App, target: str) -> Iterator[World]:
    with make_world(app, target) as w:
        yield w


METHODS = sorted(
    (f"/{service.full_name}/{method.name}", method.server_streaming)
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
)


@pytest.mark.parametrize(("method", "streaming"), METHODS)
@settings(max_examples=25, deadline=None, database=None)
@given(
    raw=st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"\x0a\x02\xff\xfe", b"\xff\xff\xff", b"\x0a\x10ab", b"\x08"]),
    )
)
def test_raw_bytes(target: str, world: World, method: str, streaming: bool, raw: bytes) -> None:
    """Bytes that may not parse at all: INVALID_ARGUMENT, never grpc's INTERNAL."""
    metadata = (("authorization", f"Bearer {world.key}"),)
    with grpc.insecure_channel(target) as channel:
        if streaming:
            stream: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(method)
            expect_no_internal(lambda: list(stream(iter([raw]), metadata=metadata, timeout=30)))
        else:
            unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
            expect_no_internal(lambda: unary(raw, metadata=metadata, timeout=30))


def test_undecodable_bytes_are_invalid_argument(target: str, world: World) -> None:
    metadata = (("authorization", f"Bearer {world.key}"),)
    with grpc.insecure_channel(target) as channel:
        get: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/agentopia.retrieval.v1.DatastoreService/GetDatastore"
        )
        stream: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            "/agentopia.retrieval.v1.IngestService/StreamIngest"
        )
        for call in (
            lambda: get(b"\x0a\x02\xff\xfe", metadata=metadata),  # id: invalid UTF-8
            lambda: list(stream(iter([b"\xff\xff\xff"]), metadata=metadata)),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid message" in str(info.value.details())
        # Without a credential the answer is still UNAUTHENTICATED: who first, then what.
        with pytest.raises(grpc.RpcError) as info:
            get(b"\xff\xff\xff")
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _list_datastores(token: str) -> Callable[[Client, World], object]:
    return lambda c, w: c.datastores.ListDatastores(pb.ListDatastoresRequest(page_token=token))


def _list_agents(token: str) -> Callable[[Client, World], object]:
    return lambda c, w: c.agents.ListAgents(pb.ListAgentsRequest(page_token=token))


def _bad_inputs() -> dict[str, tuple[Callable[[Client, World], object], str]]:
    """The malformed inputs the issue names, and their kin: (call, the field named)."""
    cases: dict[str, tuple[Callable[[Client, World], object], str]] = {}
    for label, key in (("strings", ["x", "y"]), ("bool-int", [True, 1]), ("objects", [{}, {}])):
        cases[f"ListDatastores token {label}"] = (_list_datastores(token_of(key)), "page_token")
        cases[f"ListAgents token {label}"] = (_list_agents(token_of(key)), "page_token")
    cases["ListDocuments token"] = (
        lambda c, w: c.ingest.ListDocuments(
            pb.ListDocumentsRequest(datastore_id=w.own["datastore"], page_token=token_of([{}]))
        ),
        "page_token",
    )
    cases["GetDocument NUL"] = (
        lambda c, w: c.ingest.GetDocument(
            pb.GetDocumentRequest(datastore_id=w.own["datastore"], external_id="d\x00c")
        ),
        "external_id",
    )
    cases["DeleteDocuments NUL"] = (
        lambda c, w: c.ingest.DeleteDocuments(
            pb.DeleteDocumentsRequest(datastore_id=w.own["byo"], external_ids=["ok", "d\x00c"])
        ),
        "external_ids[1]",
    )
    cases["embedding_model 300 chars"] = (
        lambda c, w: c.datastores.CreateDatastore(
            pb.CreateDatastoreRequest(
                name="x", config=pb.DatastoreConfig(embedding_model="m" * 300)
            )
        ),
        "embedding_model",
    )
    cases["agent name 201 chars"] = (
        lambda c, w: c.agents.CreateAgent(pb.CreateAgentRequest(name="a" * 201)),
        "name",
    )
    cases["agent description NUL"] = (
        lambda c, w: c.agents.CreateAgent(pb.CreateAgentRequest(name="a", description="\x00")),
        "description",
    )
    cases["datastore name NUL"] = (
        lambda c, w: c.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="n\x00")),
        "name",
    )
    cases["negative page_size"] = (
        lambda c, w: c.datastores.ListDatastores(pb.ListDatastoresRequest(page_size=-1)),
        "page_size",
    )
    return cases


BAD_INPUTS = _bad_inputs()


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_named_bad_input_is_invalid_argument(world: World, case: str) -> None:
    call, field = BAD_INPUTS[case]
    with pytest.raises(grpc.RpcError) as info:
        call(world.client, world)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(info.value.details())


def test_the_server_is_serving_afterwards(target: str, world: World) -> None:
    assert_serving(target, world)
