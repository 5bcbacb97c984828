"""Record files: JSON Lines and CSV, one document per record, fields chosen by name.

A BEIR ``corpus.jsonl`` is JSON Lines with ``_id``, ``title``, ``text`` and a
``metadata`` object, which the defaults read as they are.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.records import Item, Origin, Record, Unreadable


@dataclass(frozen=True)
class FieldMap:
    """Which fields of a record hold its id, title, text and metadata.

    Each of ``id``/``title``/``text`` lists candidates, the first present wins.
    ``metadata`` None keeps every other field; a field named ``metadata`` that
    holds an object is merged in rather than nested.
    """

    id: tuple[str, ...] = ("id", "_id")
    title: tuple[str, ...] = ("title",)
    text: tuple[str, ...] = ("text",)
    metadata: tuple[str, ...] | None = None

    def record(self, row: Mapping[str, Any], origin: Origin, line: int) -> Item:
        fallback_id = f"{origin.path}#{line}"
        found_id = _first(row, self.id)
        external_id = fallback_id if found_id in (None, "") else str(found_id)
        text = _first(row, self.text)
        if not isinstance(text, str) or not text.strip():
            wanted = " or ".join(repr(f) for f in self.text)
            return Unreadable(external_id, f"record has no text in {wanted}")
        title = _first(row, self.title)
        return Record(
            external_id,
            text,
            "" if title is None else str(title),
            origin.source,
            {**origin.metadata(), **self._metadata(row)},
        )

    def _metadata(self, row: Mapping[str, Any]) -> dict[str, Any]:
        used = {*self.id, *self.title, *self.text}
        names = self.metadata if self.metadata is not None else [k for k in row if k not in used]
        out: dict[str, Any] = {}
        for name in names:
            if name not in row:
                continue
            value = row[name]
            if name == "metadata" and isinstance(value, dict):
                out.update(value)
            else:
                out[name] = value
        return out


BEIR_FIELDS = FieldMap(id=("_id",), title=("title",), text=("text",), metadata=("metadata",))


def _first(row: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if name in row:
            return row[name]
    return None


def read_jsonl(path: Path, origin: Origin, fields: FieldMap) -> Iterator[Item]:
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield Unreadable(f"{origin.path}#{line_no}", f"invalid JSON: {e}")
                continue
            if not isinstance(row, dict):
                yield Unreadable(f"{origin.path}#{line_no}", "the line is not a JSON object")
                continue
            yield fields.record(row, origin, line_no)


def read_csv(path: Path, origin: Origin, fields: FieldMap) -> Iterator[Item]:
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        for row_no, row in enumerate(csv.DictReader(f), start=1):
            yield fields.record({k: v for k, v in row.items() if k is not None}, origin, row_no)


def count_records(path: Path, format: str) -> int:
    """How many records ``path`` holds (for progress), without parsing the JSON."""
    if format == "csv":
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
            return sum(1 for _ in csv.DictReader(f))
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())
