"""Requests whose bytes do not parse become INVALID_ARGUMENT, not grpc's INTERNAL.

grpc answers a request its deserializer cannot parse (bad wire format, invalid UTF-8 in
a string, nesting past protobuf's limit) with INTERNAL "Exception deserializing
request!" before any of our code runs. ``DecodeInterceptor`` swaps each of our methods'
deserializers for one that hands an ``Undecodable`` to the method instead; the RPC
wrapper (``rpc.py``) turns it into INVALID_ARGUMENT once the caller is authenticated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from service.errors import InvalidArgument

T = TypeVar("T")
if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]
_OURS = "/agentopia.retrieval.v1."  # health and reflection keep grpc's own handling


class Undecodable:
    """Stands in for a request message whose bytes did not parse."""

    def __init__(self, method: str, error: str) -> None:
        self.method = method
        self.error = error

    def invalid(self) -> InvalidArgument:
        return InvalidArgument(
            f"the request is not a valid message for {self.method}: {self.error[:200]}"
        )


def check_decoded(request: T) -> T:
    """``request``, or InvalidArgument when its bytes did not parse."""
    if isinstance(request, Undecodable):
        raise request.invalid()
    return request


def checked_stream(requests: Iterator[T]) -> Iterator[T]:
    for request in requests:
        yield check_decoded(request)


def _tolerant(parse: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except (DecodeError, RecursionError, UnicodeDecodeError, ValueError) as e:
            return Undecodable(method, str(e) or type(e).__name__)

    return deserialize


class DecodeInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = continuation(details)
        if handler is None:
            return handler
        return tolerant_handler(handler, details.method)


def tolerant_handler(handler: _Handler, method: str) -> _Handler:
    """``handler`` with a deserializer that turns bad bytes into an ``Undecodable``."""
    if handler.request_deserializer is None or not method.startswith(_OURS):
        return handler
    replaced: _Handler = handler._replace(  # type: ignore[attr-defined]  # named tuples
        request_deserializer=_tolerant(handler.request_deserializer, method)
    )
    return replaced
