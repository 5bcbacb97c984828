"""Opaque keyset page tokens: ``(created_at, id)`` or a text key, base64-encoded."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from service.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_TOKEN_CHARS = 4096  # a token holds one keyset position; ours are under 2 kB

# What each position of a token must hold: the column types of the keyset.
KEYSET_CREATED_ID = (datetime, UUID)
KEYSET_TEXT = (str,)


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode()


def decode_token(token: str, kinds: tuple[type, ...]) -> list[Any] | None:
    """The keyset position a token names (values of ``kinds``, in order), or None for the
    first page. Anything but a token this service issued is INVALID_ARGUMENT."""
    if not token:
        return None
    try:
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError("too long")
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(key, list) or len(key) != len(kinds):
            raise ValueError("wrong shape")
        return [_value(kind, item) for kind, item in zip(kinds, key, strict=True)]
    except (binascii.Error, ValueError, UnicodeError) as e:
        raise InvalidArgument("page_token is not a token this service issued") from e


def _value(kind: type, item: Any) -> Any:
    if not isinstance(item, str) or "\x00" in item:
        raise ValueError("not a string")
    if kind is datetime:
        moment = datetime.fromisoformat(item)
        if moment.tzinfo is None:
            raise ValueError("no time zone")
        return moment
    if kind is UUID:
        return UUID(item)
    return item
