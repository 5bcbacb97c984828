"""What every search returns (vector, keyword, hybrid's two sides): candidates, best first.

Search rows come as ``namedtuple_row`` tuples, read by column name. Measured over 1,000
rows of a search's columns: ``class_row`` into a dataclass costs about 6 µs a row more
than plain tuples (fetch ~35% slower); ``namedtuple_row`` under 1 µs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from service.models import Datastore, Hit, JsonObject


@dataclass(frozen=True)
class Candidate:
    hit: Hit
    passes: bool  # score >= threshold


# What collects a queued search's rows: calling it waits for the server's answer.
Pending = Callable[[], list[Candidate]]


class ChunkRow(Protocol):
    """The columns every search row starts with."""

    @property
    def id(self) -> int: ...
    @property
    def document_id(self) -> UUID: ...
    @property
    def external_id(self) -> str: ...
    @property
    def chunk_index(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def metadata(self) -> JsonObject | None: ...


def chunk_hit(
    datastore: Datastore,
    row: ChunkRow,
    *,
    score: float,
    distance: float,
    vector_score: float | None,
    keyword_score: float | None = None,
) -> Hit:
    """A hit from a search row."""
    return Hit(
        datastore_id=datastore.id,
        document_id=UUID(str(row.document_id)),
        external_id=row.external_id,
        chunk_id=int(row.id),
        chunk_index=int(row.chunk_index),
        title=row.title,
        content=row.content,
        metadata=row.metadata or {},
        score=score,
        distance=distance,
        vector_score=vector_score,
        keyword_score=keyword_score,
    )
