"""PDF files: the text layer of every page, via pypdf (scanned pages have none)."""

from __future__ import annotations

import logging
from pathlib import Path

from ingest.records import Item, Origin, Record, Unreadable

# pypdf reports the recoverable oddities of real-world files on this logger
logging.getLogger("pypdf").setLevel(logging.ERROR)


def read_pdf(path: Path, origin: Origin) -> Item:
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        title = str(info.title) if info is not None and info.title else ""
    except Exception as e:  # pypdf raises many kinds on broken files
        return Unreadable(origin.path, f"cannot read PDF: {type(e).__name__}: {e}")
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        return Unreadable(origin.path, "the PDF has no text layer (a scan?)")
    metadata = {**origin.metadata(), "pages": len(pages)}
    return Record(origin.path, text, title.strip() or path.stem, origin.source, metadata)
