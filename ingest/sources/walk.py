"""Inputs (files and directory trees) walked in a stable order, each file read by format."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.records import Item, Origin, Unreadable
from ingest.sources.html import read_html
from ingest.sources.pdf import read_pdf
from ingest.sources.tabular import BEIR_FIELDS, FieldMap, count_records, read_csv, read_jsonl
from ingest.sources.text import read_text

FORMATS = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}
RECORD_FORMATS = {"jsonl", "csv", "beir"}
ALL_FORMATS = sorted({*FORMATS.values(), "beir"})


@dataclass(frozen=True)
class SourceOptions:
    """How to walk and read the inputs.

    ``include``/``exclude`` are glob patterns matched against each file's path
    relative to its input and against its name (``*.md``, ``reports/*``).
    ``format`` reads every file as that format instead of by its extension.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    format: str | None = None
    fields: FieldMap = field(default_factory=FieldMap)
    hidden: bool = False


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


class Source:
    """The items of every input, in a stable order (sorted paths, then file order)."""

    def __init__(self, inputs: Sequence[Path], options: SourceOptions | None = None) -> None:
        missing = [str(p) for p in inputs if not p.exists()]
        if missing:
            raise FileNotFoundError(f"no such file or directory: {', '.join(missing)}")
        self.inputs = list(inputs)
        self.options = options or SourceOptions()

    def files(self) -> Iterator[tuple[Path, Origin]]:
        """Every file to read, with where it came from."""
        for root in self.inputs:
            name = root.resolve().name
            if root.is_file():
                fmt = self._format(root)
                if fmt is not None:
                    yield root, Origin(name, root.name, fmt)
                continue
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                rel = path.relative_to(root).as_posix()
                if not self.options.hidden and any(part.startswith(".") for part in rel.split("/")):
                    continue
                if self.options.include and not _matches(rel, self.options.include):
                    continue
                if _matches(rel, self.options.exclude):
                    continue
                fmt = self._format(path)
                if fmt is not None:
                    yield path, Origin(name, rel, fmt)

    def __iter__(self) -> Iterator[Item]:
        for path, origin in self.files():
            try:
                yield from self._read(path, origin)
            except OSError as e:  # unreadable file (permissions, vanished): it fails alone
                yield Unreadable(origin.path, f"cannot read the file: {e}")

    def _read(self, path: Path, origin: Origin) -> Iterator[Item]:
        if origin.format == "csv":
            yield from read_csv(path, origin, self.options.fields)
        elif origin.format == "jsonl":
            yield from read_jsonl(path, origin, self.options.fields)
        elif origin.format == "beir":
            yield from read_jsonl(path, origin, BEIR_FIELDS)
        elif origin.format == "pdf":
            yield read_pdf(path, origin)
        elif origin.format == "html":
            yield read_html(path, origin)
        else:
            yield read_text(path, origin)

    def count(self) -> int:
        """How many items iterating will yield (record files are counted line by line)."""
        return sum(
            count_records(path, origin.format) if origin.format in RECORD_FORMATS else 1
            for path, origin in self.files()
        )

    def _format(self, path: Path) -> str | None:
        return self.options.format or FORMATS.get(path.suffix.lower())
