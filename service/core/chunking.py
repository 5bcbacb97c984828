"""Token-aware chunking: fixed windows of model tokens with overlap, cut on token boundaries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextChunk:
    content: str
    token_count: int


def chunk_text(
    text: str, offsets: list[tuple[int, int]], *, chunk_size: int, overlap: int
) -> list[TextChunk]:
    """Split ``text`` into windows of ``chunk_size`` tokens sharing ``overlap`` tokens.

    ``offsets`` are the character spans of the text's tokens (from the model's
    tokenizer), so every chunk fits the model's window and keeps the original
    characters between its first and last token.
    """
    if chunk_size <= 0 or not 0 <= overlap < chunk_size:
        raise ValueError("need chunk_size > 0 and 0 <= overlap < chunk_size")
    chunks: list[TextChunk] = []
    start = 0
    while start < len(offsets):
        end = min(start + chunk_size, len(offsets))
        content = text[offsets[start][0] : offsets[end - 1][1]]
        chunks.append(TextChunk(content, end - start))
        if end == len(offsets):
            break
        start = end - overlap
    return chunks
