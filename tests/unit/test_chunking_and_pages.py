"""Pure units: chunking windows and page tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from service.core.chunking import chunk_text
from service.errors import InvalidArgument
from service.storage.pagination import (
    KEYSET_CREATED_ID,
    KEYSET_TEXT,
    decode_token,
    encode_token,
    page_size,
)


def _offsets(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    text = " ".join(words)
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return text, spans


def test_chunks_cover_text_with_overlap() -> None:
    text, offsets = _offsets([f"w{i}" for i in range(10)])
    chunks = chunk_text(text, offsets, chunk_size=4, overlap=1)
    assert [c.content for c in chunks] == [
        "w0 w1 w2 w3",
        "w3 w4 w5 w6",
        "w6 w7 w8 w9",
    ]
    assert [c.token_count for c in chunks] == [4, 4, 4]


def test_short_text_is_one_chunk_and_empty_text_none() -> None:
    text, offsets = _offsets(["only", "three", "words"])
    assert [c.content for c in chunk_text(text, offsets, chunk_size=8, overlap=2)] == [text]
    assert chunk_text("", [], chunk_size=8, overlap=2) == []


def test_chunking_rejects_overlap_not_below_size() -> None:
    with pytest.raises(ValueError):
        chunk_text("a", [(0, 1)], chunk_size=4, overlap=4)


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    moment, key = datetime.now(UTC), uuid.uuid4()
    assert decode_token(encode_token([moment, key]), KEYSET_CREATED_ID) == [moment, key]
    assert decode_token(encode_token(["a\U0001f600"]), KEYSET_TEXT) == ["a\U0001f600"]
    assert decode_token("", KEYSET_TEXT) is None
    for garbage in ("not-a-token!", "A" * 5000, encode_token(["a", 1]), encode_token([moment])):
        with pytest.raises(InvalidArgument, match="page_token"):
            decode_token(garbage, KEYSET_CREATED_ID)
    bad_keys: list[list[object]] = [
        ["x", "y"],
        [True, 1],
        [{}, {}],
        [str(moment.replace(tzinfo=None)), str(key)],
    ]
    for key_ in bad_keys:
        with pytest.raises(InvalidArgument, match="page_token"):
            decode_token(encode_token(key_), KEYSET_CREATED_ID)
    with pytest.raises(InvalidArgument, match="page_token"):
        decode_token(encode_token(["a\x00"]), KEYSET_TEXT)
    assert page_size(0) == 50
    assert page_size(10_000) == 500
