"""Plain text and Markdown files: one document each, titled by the first heading."""

from __future__ import annotations

from pathlib import Path

from ingest.records import Item, Origin, Record, Unreadable


def read_text_file(path: Path) -> str:
    """The file as text: UTF-8 (a BOM is dropped), undecodable bytes replaced."""
    return path.read_bytes().decode("utf-8-sig", errors="replace")


def markdown_title(text: str) -> str:
    """The first ATX heading (``# Title``), or ''."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            title = stripped.lstrip("#").strip()
            if title:
                return title
    return ""


def read_text(path: Path, origin: Origin) -> Item:
    text = read_text_file(path)
    if not text.strip():
        return Unreadable(origin.path, "the file has no text")
    title = markdown_title(text) if origin.format == "md" else ""
    return Record(origin.path, text, title or path.stem, origin.source, origin.metadata())
