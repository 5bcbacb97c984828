"""Robustness of the server (issue 18): idle and keyless calls do not starve it, overload
is refused at once, messages and responses are bounded in bytes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest

from service.app import App
from service.client import Client, connect, pb
from service.models import Role
from tests.helpers.limits_helpers import (
    LIST_DATASTORES,
    STREAM_INGEST,
    HeldStream,
    IdleCalls,
    server_with,
)
from tests.helpers.rpc import ingest_vectors, query_vector, status_of, vector_datastore


def _key(app: App, role: Role = Role.USER) -> str:
    user_id = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    return app.identity.create_key(user_id, role).key


@pytest.fixture
def idle(target: str) -> Iterator[IdleCalls]:
    channel = grpc.insecure_channel(target)
    calls = IdleCalls(channel)
    yield calls
    calls.close()
    channel.close()


def test_keyless_calls_that_never_send_do_not_starve_the_server(
    idle: IdleCalls, client: Client
) -> None:
    # grpcio's sync server froze with 20 of these (16 threads each waiting for a request).
    idle.open(LIST_DATASTORES, 40)
    time.sleep(0.5)  # let them all reach the server
    assert all(not c.done() for c in idle.calls)
    client.datastores.ListDatastores(pb.ListDatastoresRequest(), timeout=5)


def test_idle_streams_with_a_key_do_not_starve_the_server(
    idle: IdleCalls, app: App, client: Client
) -> None:
    idle.open(STREAM_INGEST, 40, key=_key(app))
    time.sleep(0.5)
    assert all(not c.done() for c in idle.calls)
    client.datastores.ListDatastores(pb.ListDatastoresRequest(), timeout=5)


def test_a_stream_silent_past_the_idle_timeout_ends_with_deadline_exceeded(app: App) -> None:
    key = _key(app)
    with server_with(app, stream_idle_timeout_s=0.5) as target:
        client = connect(target, key)
        ds = vector_datastore(client, dimensions=4)
        held = HeldStream(client.channel, key, ds.id)
        assert held.first.status == pb.CREATED
        with pytest.raises(grpc.RpcError) as info:
            next(held.call)
        held.close()
        client.close()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no message for 0.5 s" in str(info.value.details())


def test_past_the_calls_in_flight_bound_a_call_is_refused_at_once(app: App) -> None:
    keys = [_key(app) for _ in range(3)]
    with server_with(app, grpc_workers=2) as target:
        clients = [connect(target, k) for k in keys]
        held = [
            HeldStream(c.channel, k, vector_datastore(c, dimensions=4).id)
            for c, k in zip(clients[:2], keys[:2], strict=True)
        ]
        code, details = status_of(
            lambda: clients[2].datastores.ListDatastores(pb.ListDatastoresRequest(), timeout=30)
        )
        for h in held:
            h.close()
        # the slots come back once the held calls end
        assert _eventually(lambda: _lists(clients[2]))
        for c in clients:
            c.close()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many calls in flight" in details


def test_one_caller_cannot_take_every_slot(app: App) -> None:
    greedy, other, service = _key(app), _key(app), _key(app, Role.SERVICE)
    with server_with(app, max_calls_per_principal=2) as target:
        mine = connect(target, greedy)
        ds = vector_datastore(mine, dimensions=4)
        held = [HeldStream(mine.channel, greedy, ds.id) for _ in range(2)]
        code, details = status_of(
            lambda: mine.datastores.ListDatastores(pb.ListDatastoresRequest(), timeout=30)
        )
        others = [connect(target, other), connect(target, service)]
        served = [_lists(c) for c in others]
        for h in held:
            h.close()
        for c in [mine, *others]:
            c.close()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit 2" in details
    assert served == [True, True]


def test_a_message_over_the_limit_is_refused(client: Client, app: App) -> None:
    assert app.settings.max_message_bytes == 4 * 1024 * 1024  # the default
    ds = vector_datastore(client, dimensions=4)
    huge = pb.DocumentInput(external_id="big", text="x" * (5 * 1024 * 1024))
    code, _ = status_of(
        lambda: client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(datastore_id=ds.id, documents=[huge])
        )
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_caller_chunk_text_has_a_size_cap(client: Client, app: App) -> None:
    ds = vector_datastore(client, dimensions=4)
    limit = app.settings.max_chunk_chars
    chunk = pb.ChunkInput(content="y" * (limit + 1), vector=[1, 0, 0, 0])
    code, details = status_of(
        lambda: client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=ds.id, documents=[pb.DocumentInput(external_id="c", chunks=[chunk])]
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "chunks[0].content" in details


def test_a_response_over_its_byte_budget_is_cut_and_flagged(
    client: Client, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    ds = vector_datastore(client, dimensions=4, max_results=50)
    ingest_vectors(client, ds.id, np.random.default_rng(1).random((30, 4)))
    whole = query_vector(client, [ds.id], [1, 1, 1, 1])
    assert len(whole.hits) == 30 and not whole.truncated
    monkeypatch.setattr(app.settings, "max_response_bytes", 2048)
    cut = query_vector(client, [ds.id], [1, 1, 1, 1])
    assert cut.truncated
    assert 0 < len(cut.hits) < 30
    assert [h.chunk_id for h in cut.hits] == [h.chunk_id for h in whole.hits[: len(cut.hits)]]
    assert cut.ByteSize() <= 2048


def test_exact_search_is_limited_to_small_datastores_for_users(
    make_client: Callable[..., Client], app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    user = make_client()
    ds = vector_datastore(user, dimensions=4)
    ingest_vectors(user, ds.id, np.random.default_rng(2).random((12, 4)))
    assert len(query_vector(user, [ds.id], [1, 0, 0, 0], exact=True).hits) == 10
    monkeypatch.setattr(app.settings, "exact_max_chunks", 11)
    code, details = status_of(lambda: query_vector(user, [ds.id], [1, 0, 0, 0], exact=True))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 11 chunks" in details
    assert query_vector(user, [ds.id], [1, 0, 0, 0]).hits  # approximate search still serves
    service = make_client(Role.SERVICE)
    assert len(query_vector(service, [ds.id], [1, 0, 0, 0], exact=True).hits) == 10


def _lists(client: Client) -> bool:
    try:
        client.datastores.ListDatastores(pb.ListDatastoresRequest(), timeout=10)
    except grpc.RpcError:
        return False
    return True


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return False
