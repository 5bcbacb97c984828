"""The context a synchronous servicer sees under the grpc.aio server (service/api/aio_bridge.py):
abort, time_remaining, add_callback and is_active behave as in grpcio's synchronous server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
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


def _slow_stream(requests: Iterator[bytes], context: SyncContext) -> Iterator[bytes]:
    """Busy for longer than the idle timeout on each message before answering it."""
    for request in requests:
        time.sleep(2 * IDLE_S)
        yield request


IDLE_S = 0.5


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    yield from _serve(idle_timeout_s=5)


@pytest.fixture(scope="module")
def short_idle_target() -> Iterator[str]:
    yield from _serve(idle_timeout_s=IDLE_S)


def _serve(idle_timeout_s: float) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = Runner(
        loop, Gate(4), PrincipalSlots(4), read_ahead_bytes=1024, idle_timeout_s=idle_timeout_s
    )

    async def start() -> tuple[aio.Server, int]:
        server = aio.server()
        handlers = {
            "Remaining": runner.wrap(grpc.unary_unary_rpc_method_handler(_remaining)),
            "Abort": runner.wrap(grpc.unary_unary_rpc_method_handler(_abort)),
            "Held": runner.wrap(grpc.unary_unary_rpc_method_handler(_held)),
            "Upper": runner.wrap(grpc.stream_stream_rpc_method_handler(_echo_stream)),
            "Meta": runner.wrap(grpc.unary_unary_rpc_method_handler(_meta)),
            "MetaStream": runner.wrap(grpc.stream_stream_rpc_method_handler(_meta_stream)),
            "Slow": runner.wrap(grpc.stream_stream_rpc_method_handler(_slow_stream)),
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
    loop.close()


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


def _one_at_a_time(answered: threading.Event, messages: list[bytes]) -> Iterator[bytes]:
    """Sends a message, then nothing until its answer has arrived (a client with a window of 1)."""
    for message in messages:
        answered.clear()
        yield message
        assert answered.wait(10)


def test_a_client_waiting_for_the_answer_to_what_it_sent_is_not_idle(
    short_idle_target: str,
) -> None:
    """The server takes longer than the idle timeout over each message; the client sends
    its next one only after the answer. Only the server's wait for a message is idle time."""
    answered = threading.Event()
    got: list[bytes] = []
    with grpc.insecure_channel(short_idle_target) as channel:
        slow: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream("/t.T/Slow")
        for reply in slow(_one_at_a_time(answered, [b"a", b"b", b"c"]), timeout=30):
            got.append(reply)
            answered.set()
    assert got == [b"a", b"b", b"c"]


def test_a_client_silent_while_the_server_waits_is_cut_at_the_idle_timeout(
    short_idle_target: str,
) -> None:
    def silent_after_one() -> Iterator[bytes]:
        yield b"a"
        time.sleep(10 * IDLE_S + 2 * IDLE_S)

    started = time.monotonic()
    with grpc.insecure_channel(short_idle_target) as channel, pytest.raises(grpc.RpcError) as info:
        slow: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream("/t.T/Slow")
        list(slow(silent_after_one(), timeout=30))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # busy for 2 x IDLE_S on the message, then idle for IDLE_S, read at most 1 s late
    assert time.monotonic() - started < 3 * IDLE_S + 1.0 + 2.0
