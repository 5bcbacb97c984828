"""What sources yield: a document to send, or an input item that could not be read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Origin:
    """Where an input file came from; every record read from it carries this."""

    source: str  # the input as named on the command line (its last path component)
    path: str  # the file's path relative to that input, with '/' separators
    format: str  # txt, md, html, pdf, jsonl, csv, beir

    def metadata(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "format": self.format}


@dataclass(frozen=True)
class Record:
    """One document for the service; ``external_id`` is stable across runs of a job."""

    external_id: str
    text: str
    title: str = ""
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unreadable:
    """An input item that produced no document (bad JSON, a broken PDF, no text)."""

    external_id: str
    reason: str


Item = Record | Unreadable
