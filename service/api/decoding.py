"""What a request must be before its RPC runs: a message that parsed, and strings
PostgreSQL can store.

**Bytes that do not parse** become INVALID_ARGUMENT, not grpc's INTERNAL. grpc answers a
request its deserializer cannot parse (bad wire format, invalid UTF-8 in a string,
nesting past protobuf's limit) with INTERNAL "Exception deserializing request!" before
any of our code runs. ``DecodeInterceptor`` swaps each of our methods' deserializers for
one that hands an ``Undecodable`` to the method instead; the RPC wrapper (``rpc.py``)
turns it into INVALID_ARGUMENT once the caller is authenticated.

**No NUL in any string.** PostgreSQL's text and jsonb hold no NUL character, so a NUL
in any string of a unary request (an id, a name, a page token, a filter or metadata key
or value) could only fail deep in the storage layer. One walk over the message
(``check_request``) refuses it up front, naming the field. ``Struct`` fields (filters,
metadata) are JSON: they are checked where they are read, with their JSON paths
(``service.metadata_filter``, ``validation.check_metadata``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

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


# --------------------------------------------------------------------- no NUL in strings

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_STRUCT = "google.protobuf.Struct"


def check_request(message: object) -> None:
    """Raise InvalidArgument naming the first string field of ``message`` holding a NUL."""
    if isinstance(message, Message):
        _walk(message, "")


def _walk(message: Message, path: str) -> None:
    for field, value in message.ListFields():
        at = f"{path}{field.name}"
        kind = field.message_type
        if kind is not None and kind.full_name == _STRUCT:
            continue
        if kind is not None and kind.GetOptions().map_entry:
            _walk_map(field, value, at)
        elif field.type == _MESSAGE:
            if field.is_repeated:
                for i, item in enumerate(value):
                    _walk(item, f"{at}[{i}].")
            else:
                _walk(value, f"{at}.")
        elif field.type == _STRING and field.is_repeated:
            for i, text in enumerate(value):
                _check(text, f"{at}[{i}]")
        elif field.type == _STRING:
            _check(value, at)


def _walk_map(field: FieldDescriptor, entries: dict[object, object], at: str) -> None:
    assert field.message_type is not None
    value_field = field.message_type.fields_by_name["value"]
    for key, item in entries.items():
        if isinstance(key, str):
            _check(key, f"{at} (a key)")
        entry = f"{at}[{key!r}]" if isinstance(key, str) and "\x00" not in key else at
        if value_field.type == _MESSAGE and isinstance(item, Message):
            _walk(item, f"{entry}.")
        elif isinstance(item, str):
            _check(item, entry)


def _check(text: str, field: str) -> None:
    if "\x00" in text:
        raise InvalidArgument(f"{field} contains a NUL character")
