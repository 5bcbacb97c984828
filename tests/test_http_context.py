"""The grpc.ServicerContext adapter the HTTP transport hands to the servicers and rpc wrapper."""

from __future__ import annotations

import base64
import socket
import time
from typing import Any

import grpc
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import Headers, RequestContext

from service.api.http.context import NO_DEADLINE_S, HttpServicerContext
from service.api.http.endpoints import SERVICES, method_info
from service.api.http.server import HttpServer


def request_context(timeout_ms: int | None = None, **headers: str) -> RequestContext[Any, Any]:
    """connectrpc's context of one Query call over HTTP."""
    query = method_info(SERVICES[-1].methods_by_name["Query"])
    return RequestContext(
        method=query,
        http_method="POST",
        request_headers=Headers(headers),
        timeout_ms=timeout_ms,
        client_address="127.0.0.1:5555",
    )


def context(timeout_ms: int | None = None, **headers: str) -> HttpServicerContext:
    return HttpServicerContext(request_context(timeout_ms, **headers))


def test_headers_are_invocation_metadata_with_bin_headers_decoded() -> None:
    ctx = context(
        None,
        **{"authorization": "Bearer agr_x", "trace-bin": base64.b64encode(b"\x00\x01").decode()},
    )
    assert dict(ctx.invocation_metadata()) == {
        "authorization": "Bearer agr_x",
        "trace-bin": b"\x00\x01",
    }
    assert ctx.peer() == "ipv4:127.0.0.1:5555"


def test_time_remaining_follows_the_callers_timeout() -> None:
    assert 4.0 < context(timeout_ms=5000).time_remaining() <= 5.0
    assert context().time_remaining() == NO_DEADLINE_S  # what gRPC reports without a deadline
    assert not context(timeout_ms=0).is_active()


def test_abort_raises_the_connect_error_with_the_same_code() -> None:
    ctx = context()
    with pytest.raises(ConnectError) as info:
        ctx.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many")
    assert (info.value.code, info.value.message) == (Code.RESOURCE_EXHAUSTED, "too many")
    ctx = context()
    ctx.set_code(grpc.StatusCode.UNAVAILABLE)
    ctx.set_details("later")
    with pytest.raises(ConnectError) as info:
        ctx.raise_if_failed()
    assert info.value.code == Code.UNAVAILABLE


def test_callbacks_run_once_when_the_call_ends() -> None:
    ctx = context()
    ran: list[str] = []
    assert ctx.add_callback(lambda: ran.append("a"))
    assert ctx.is_active()
    ctx.finish()
    ctx.finish()
    assert ran == ["a"] and not ctx.is_active()
    ctx.add_callback(lambda: ran.append("late"))  # after the end: runs at once, as in gRPC
    assert ran == ["a", "late"]


def test_metadata_goes_to_response_headers_and_trailers() -> None:
    request = request_context()
    ctx = HttpServicerContext(request)
    ctx.send_initial_metadata((("x-request-id", "r1"),))
    ctx.set_trailing_metadata((("x-cost-bin", b"\x01"),))
    assert request.response_headers.get("x-request-id") == "r1"
    assert request.response_trailers.get("x-cost-bin") == base64.b64encode(b"\x01").decode()


def test_an_expired_connect_timeout_is_deadline_exceeded(http_server: HttpServer) -> None:
    body = b'{"text": "x"}'
    head = (
        "POST /agentopia.retrieval.v1.RetrievalService/Query HTTP/1.1\r\nHost: x\r\n"
        f"content-type: application/json\r\nconnect-timeout-ms: 50\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", http_server.port), timeout=10) as s:
        s.sendall(head.encode())
        time.sleep(0.3)  # the body comes after the caller's deadline
        s.sendall(body)
        reply = s.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 504")
    assert "deadline_exceeded" in reply
