"""The HTTP port's ASGI application: Connect/gRPC-Web RPCs plus health and metrics.

- ``POST /<package>.<Service>/<Method>``: the four services over the Connect
  protocol (JSON or binary) and gRPC-Web, through connectrpc.
- ``GET /healthz``: 200 while the process answers (liveness).
- ``GET /readyz``: 200 only while the gRPC health service says SERVING, else 503.
- ``GET /metrics``: the Prometheus registry (``prometheus_client.generate_latest``).

Every request body is bounded in bytes (the gRPC maximum message size, checked
against Content-Length before reading and while reading) and must arrive within
``body_timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import prometheus_client
from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError
from connectrpc.method import StreamType
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import json_format
from google.protobuf.message import Message

from service.api.http.endpoints import STREAM_INGEST_UNSUPPORTED

Scope = dict[str, Any]
Message_ = dict[str, Any]
Receive = Callable[[], Awaitable[Message_]]
Send = Callable[[Message_], Awaitable[None]]

# One gRPC-Web/Connect envelope header (flags + length) beyond the message itself.
_ENVELOPE_BYTES = 5
# An oversized body up to this many bytes is read and dropped before the refusal is
# sent: closing a socket with unread bytes makes TCP reset it, and the reset can
# destroy the refusal before the client reads it. Larger bodies are not read.
_DISCARD_MAX_BYTES = 1 << 20


class ProtoJsonCodec:
    """proto3 JSON: lowerCamelCase out; lowerCamelCase or proto names in; unknown fields refused."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        return json_format.MessageToJson(message, indent=None).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> Message:
        return json_format.Parse(bytes(data), message_class(), ignore_unknown_fields=False)


class _ConnectApp(ConnectASGIApplication[None]):
    @property
    def path(self) -> str:
        return "/"


class HttpApp:
    """The ASGI callable served on the HTTP port."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint[Any, Any]],
        *,
        ready: Callable[[], bool],
        max_message_bytes: int,
        body_timeout_s: float,
    ) -> None:
        codecs: list[Codec[Any, Any]] = [google_protobuf_binary_codec(), ProtoJsonCodec()]
        self._rpc = _ConnectApp(
            service=None,
            endpoints=lambda _: cast("Mapping[str, Any]", endpoints),
            read_max_bytes=max_message_bytes,
            codecs=codecs,
        )
        self._unsupported = {
            path for path, e in endpoints.items() if e.method.stream_type != StreamType.UNARY
        }
        self._ready = ready
        self._max_body = max_message_bytes + _ENVELOPE_BYTES
        self._body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websockets here
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/healthz":
            await _plain(send, 200, b"ok\n")
        elif method == "GET" and path == "/readyz":
            serving = await asyncio.to_thread(self._ready)
            await _plain(send, 200 if serving else 503, b"ok\n" if serving else b"not ready\n")
        elif method == "GET" and path == "/metrics":
            body = await asyncio.to_thread(prometheus_client.generate_latest)
            await _respond(send, 200, prometheus_client.CONTENT_TYPE_LATEST, body)
        elif path in self._unsupported and not _is_stream_content(scope):
            # A unary content type (plain JSON, curl) on the streaming method: say why.
            await _connect_error(send, 501, Code.UNIMPLEMENTED, STREAM_INGEST_UNSUPPORTED)
        else:
            await self._rpc(scope, self._guard(scope, receive), send)

    def _guard(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` with the body's byte bound and read timeout applied."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._body_timeout_s
        state = {"seen": 0, "done": False}
        declared = _content_length(scope)
        limit = self._max_body

        async def guarded() -> Message_:
            if state["done"]:
                return await receive()  # after the body: disconnect watch, no deadline
            if declared is not None and declared > limit:
                if declared <= _DISCARD_MAX_BYTES:
                    await discard_rest()
                raise _too_large(limit)
            message = await timed_receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
                if state["seen"] > limit:
                    await discard_rest()
                    raise _too_large(limit)
            return message

        async def timed_receive() -> Message_:
            try:
                async with asyncio.timeout_at(deadline):
                    return await receive()
            except TimeoutError:
                raise ConnectError(
                    Code.DEADLINE_EXCEEDED,
                    f"request body not received within {self._body_timeout_s:g} s",
                ) from None

        async def discard_rest() -> None:
            """Read the rest of an oversized body, up to ``_DISCARD_MAX_BYTES`` in all."""
            while not state["done"] and state["seen"] <= _DISCARD_MAX_BYTES:
                message = await timed_receive()
                if message["type"] != "http.request":
                    return
                state["seen"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)

        return guarded


def _too_large(limit: int) -> ConnectError:
    return ConnectError(
        Code.RESOURCE_EXHAUSTED, f"request body is larger than the {limit}-byte limit"
    )


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _is_stream_content(scope: Scope) -> bool:
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            text: str = value.decode("latin-1").lower()
            return text.startswith(("application/connect+", "application/grpc"))
    return False


async def _plain(send: Send, status: int, body: bytes) -> None:
    await _respond(send, status, "text/plain; charset=utf-8", body)


async def _connect_error(send: Send, status: int, code: Code, message: str) -> None:
    body = json.dumps({"code": code.value, "message": message}).encode()
    await _respond(send, status, "application/json", body)


async def _respond(send: Send, status: int, content_type: str, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
