"""Opaque keyset page tokens: ``(created_at, id)`` or a text key, base64-encoded."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from service.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode()


def decode_token(token: str, arity: int) -> list[Any] | None:
    """The keyset position a token names, or None for the first page."""
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError) as e:
        raise InvalidArgument("page_token is not a token this service issued") from e
    if not isinstance(key, list) or len(key) != arity:
        raise InvalidArgument("page_token is not a token this service issued")
    return key
