"""Checks every unary request gets before its RPC runs, whatever the message.

PostgreSQL's text and jsonb hold no NUL character, so a NUL in any string of a request
(an id, a name, a page token, a filter or metadata key or value) could only fail deep in
the storage layer. One walk over the message refuses it up front, naming the field.
``Struct`` fields (filters, metadata) are JSON: they are checked where they are read,
with their JSON paths (``service.metadata_filter``, ``validation.check_metadata``).
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from service.errors import InvalidArgument

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
