"""The context a synchronous servicer sees under the grpc.aio server (service/api/aio_bridge.py):
abort, time_remaining, add_callback and is_active behave as in grpcio's synchronous server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc import aio

from service.api.aio_bridge import Runner, SyncContext
from service.api.limits import Gate, PrincipalSlots

ended = threading.Event()
seen: dict[str, Any] = {}


def _remaining(request: bytes, context: SyncContext) -> bytes:
    return repr(context.time_remaining()).encode()


def _abort(request: bytes, context: SyncContext) -> bytes:
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now")
    raise AssertionError("abort returns only by raising")


def _held(request: bytes, context: SyncContext) -> bytes:
    assert context.add_callback(ended.set)
    seen["active_before"] = context.is_active()
    ended.wait(10)
    seen["active_after"] = context.is_active()
    return b"late"


def _echo_stream(requests: Iterator[bytes], context: SyncContext) -> Iterator[bytes]:
    for request in requests:
        yield request.upper()


META = (("x-request-id", "r-1"),)


def _meta(request: bytes, context: SyncContext) -> bytes:
    context.send_initial_metadata(META)
    if request == b"fail":
        context.abort(grpc.StatusCode.NOT_FOUND, "gone")
    return b"ok"


def _meta_stream(requests: Iterator[bytes], context: SyncContext) -> Iterator[bytes]:
    context.send_initial_metadata(META)
    for request in requests:
        if request == b"fail":
            context.abort(grpc.StatusCode.NOT_FOUND, "gone")
        yield request


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = Runner(loop, Gate(4), PrincipalSlots(4), read_ahead_bytes=1024, idle_timeout_s=5)

    async def start() -> tuple[aio.Server, int]:
        server = aio.server()
        handlers = {
            "Remaining": runner.wrap(grpc.unary_unary_rpc_method_handler(_remaining)),
            "Abort": runner.wrap(grpc.unary_unary_rpc_method_handler(_abort)),
            "Held": runner.wrap(grpc.unary_unary_rpc_method_handler(_held)),
            "Upper": runner.wrap(grpc.stream_stream_rpc_method_handler(_echo_stream)),
            "Meta": runner.wrap(grpc.unary_unary_rpc_method_handler(_meta)),
            "MetaStream": runner.wrap(grpc.stream_stream_rpc_method_handler(_meta_stream)),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result()
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(server.stop(0), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_time_remaining_is_the_callers_deadline(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/t.T/Remaining")
        # grpc rounds the timeout it sends up to its wire units: a few ms over is the caller's
        assert 0 < float(call(b"", timeout=3)) <= 3.05
        assert call(b"") == b"None"


def test_abort_ends_the_call_with_its_status(target: str) -> None:
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
        abort: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/t.T/Abort")
        abort(b"")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "not now"


def test_callbacks_run_and_the_call_goes_inactive_when_the_client_gives_up(target: str) -> None:
    ended.clear()
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
        held: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/t.T/Held")
        held(b"", timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert ended.wait(5)  # the callback fired: the servicer's wait ended early
    deadline = threading.Event()
    deadline.wait(0.2)
    assert seen == {"active_before": True, "active_after": False}


def test_streams_pass_messages_through_in_order(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        call: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream("/t.T/Upper")
        assert list(call(iter([b"a", b"b", b"c"]), timeout=10)) == [b"A", b"B", b"C"]


@pytest.mark.parametrize("request_bytes", [b"x", b"fail"])
def test_initial_metadata_reach_the_caller_of_a_unary_call(
    target: str, request_bytes: bytes
) -> None:
    """Sent from the loop with the response or the status, not from the call's thread."""
    with grpc.insecure_channel(target) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/t.T/Meta")
        if request_bytes == b"fail":
            with pytest.raises(grpc.RpcError) as info:
                call(request_bytes, timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert META[0] in info.value.initial_metadata()  # type: ignore[attr-defined]
        else:
            reply, outcome = call.with_call(request_bytes, timeout=10)
            assert reply == b"ok" and META[0] in outcome.initial_metadata()


@pytest.mark.parametrize("messages", [[b"a", b"b"], [], [b"fail"], [b"a", b"fail"]])
def test_initial_metadata_reach_the_caller_of_a_stream(target: str, messages: list[bytes]) -> None:
    """With the first response, or before the status of a stream that wrote nothing."""
    fails = b"fail" in messages
    expected = messages[: messages.index(b"fail")] if fails else messages
    got: list[bytes] = []
    with grpc.insecure_channel(target) as channel:
        meta: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            "/t.T/MetaStream"
        )
        responses = meta(iter(messages), timeout=10)
        with pytest.raises(grpc.RpcError) if fails else contextlib.nullcontext():
            got.extend(responses)
        assert META[0] in responses.initial_metadata()
    assert got == expected
