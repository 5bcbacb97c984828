"""A ``grpc.ServicerContext`` for calls that arrive over HTTP (Connect, gRPC-Web).

The servicers and the one RPC wrapper (``service/api/rpc.py``) are written against
``grpc.ServicerContext``; this adapter lets them run unchanged behind the HTTP
transport, so authentication, the error table and anything else the wrapper does
apply to both transports. The methods that carry meaning here, and which other
code may rely on:

- ``invocation_metadata()``: the HTTP request headers as ``(key, value)`` pairs,
  keys lower-case (``authorization``, ``x-request-id``, ...); ``-bin`` headers
  are base64-decoded to ``bytes`` as gRPC delivers them.
- ``abort(code, details)`` / ``abort_with_status(status)``: raise a Connect error
  with the same code (Connect's codes are gRPC's: ``connect_code``).
- ``set_code(code)`` / ``set_details(details)`` / ``code()`` / ``details()``: a
  non-OK code set without aborting becomes the call's error once it returns.
- ``is_active()``: False once the call ended, was cancelled (client gone) or
  ran past its deadline.
- ``time_remaining()``: seconds left of the ``connect-timeout-ms`` /
  ``grpc-timeout`` the client sent; without one, the same huge value gRPC gives.
- ``add_callback(fn)``: ``fn()`` runs once when the call ends (done, failed or
  cancelled), as gRPC runs it; returns True.
- ``cancel()``: ends the call as cancelled (runs the callbacks).
- ``send_initial_metadata(md)``: response headers; ``set_trailing_metadata(md)``:
  response trailers (trailer headers in Connect unary, end-of-stream in gRPC-Web).
- ``peer()``: ``ipv4:host:port`` of the client, as gRPC writes it.

The rest (``auth_context``, ``peer_identities``, compression switches) answer as an
insecure gRPC call does.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

# What gRPC's time_remaining() reports for a call without a deadline.
NO_DEADLINE_S = 9.223372036854776e18

Metadata = tuple[tuple[str, str | bytes], ...]


def connect_code(code: grpc.StatusCode) -> Code:
    """The Connect code for a gRPC status code: the same names (Connect spells CANCELED)."""
    return Code.CANCELED if code is grpc.StatusCode.CANCELLED else Code[code.name]


class HttpServicerContext(grpc.ServicerContext):
    """One HTTP call seen as a gRPC call; see the module docstring for its contract."""

    # initial metadata cost nothing of their own here: they are the response's headers
    # (observability.return_request_id sends the request id as one)
    headers_go_with_the_response = True

    def __init__(self, request: RequestContext[Any, Any]) -> None:
        self._request = request
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._done = False
        self._code = grpc.StatusCode.OK
        self._details = ""
        self._trailing: Metadata = ()
        self._initial: Metadata = ()

    # --- what the request carries ---
    def invocation_metadata(self) -> Metadata:
        pairs: list[tuple[str, str | bytes]] = []
        for key, value in self._request.request_headers.allitems():
            name = key.lower()
            pairs.append((name, _unbase64(value) if name.endswith("-bin") else value))
        return tuple(pairs)

    def peer(self) -> str:
        address = self._request.client_address
        return f"ipv4:{address}" if address else "unknown"

    def peer_identities(self) -> Iterable[bytes] | None:
        return None

    def peer_identity_key(self) -> str | None:
        return None

    def auth_context(self) -> Mapping[str, bytes]:
        return {}

    # --- the call's life ---
    def is_active(self) -> bool:
        return not self._done and self.time_remaining() > 0

    def time_remaining(self) -> float:
        remaining_ms = self._request.timeout_ms
        return NO_DEADLINE_S if remaining_ms is None else max(remaining_ms / 1000.0, 0.0)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return True
        callback()  # already over: gRPC would have run it at the end
        return True

    def cancel(self) -> bool:
        self.finish()
        return True

    def finish(self) -> None:
        """End the call (done, failed or cancelled): run the callbacks once."""
        with self._lock:
            if self._done:
                return
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    # --- the outcome ---
    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self._code, self._details = code, details
        raise ConnectError(connect_code(code), details)

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self.set_trailing_metadata(status.trailing_metadata)
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def raise_if_failed(self) -> None:
        """After the method returned: a non-OK code it set becomes the call's error."""
        if self._code != grpc.StatusCode.OK:
            raise ConnectError(connect_code(self._code), self._details)

    # --- response metadata ---
    def send_initial_metadata(self, initial_metadata: Metadata) -> None:
        self._initial = tuple(initial_metadata)
        _copy_into(self._request.response_headers, self._initial)

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self._trailing = tuple(trailing_metadata)
        _copy_into(self._request.response_trailers, self._trailing)

    def initial_metadata(self) -> Metadata:
        return self._initial

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def set_compression(self, compression: grpc.Compression) -> None:
        pass  # the response's compression is negotiated from Accept-Encoding

    def disable_next_message_compression(self) -> None:
        pass


def _unbase64(value: str) -> bytes:
    return base64.b64decode(value + "=" * (-len(value) % 4))


def _copy_into(headers: Any, metadata: Metadata) -> None:
    for key, value in metadata:
        text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
        headers.add(key, text)
