"""Running the ingest CLI in-process and checking what it left in a datastore."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from ingest.cli import main
from service.app import App
from tests.helpers.rows import row_counts


def run_cli(target: str, key: str, *args: str | Path) -> tuple[int, dict[str, object]]:
    """The CLI's exit code and its JSON summary."""
    summary = Path(os.environ.get("TMPDIR", "/tmp")) / f"summary-{uuid.uuid4().hex}.json"
    code = main(
        [str(a) for a in args]
        + ["--target", target, "--api-key", key, "--progress", "never", "--summary-json"]
        + [str(summary)]
    )
    data = json.loads(summary.read_text())
    summary.unlink()
    return code, data


def datastore_counts(app: App, ds_id: str) -> dict[str, int]:
    """``row_counts`` by name (documents, chunks, declared_chunks, duplicates, ...)."""
    return dict(row_counts(app, ds_id)._asdict())


def assert_consistent(counts: dict[str, int]) -> None:
    """No duplicate ids, no chunk without its document, no document missing chunks."""
    assert counts["duplicates"] == counts["orphans"] == counts["partial"] == 0, counts
    assert counts["chunks"] == counts["declared_chunks"], counts
