"""The query path stays short: the service/ files whose code runs for one plain text Query.

docs/architecture.md ("Request flow: Query") lists them and says why each is there. A
new file on that path must earn its place: merge it where it belongs, or raise
``MOST_FILES`` here and add it to that list.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import service
from service.api.server import create_server
from service.app import App
from service.client import connect, pb
from service.models import Role
from service.settings import Settings

MOST_FILES = 24
_SERVICE = str(Path(service.__file__).resolve().parent) + "/"
# Left out: client.py (the caller's side), the generated stubs, and logs.py, entered here
# only because the tests' log guard formats every record with its JsonFormatter (as a
# server with RETRIEVAL_LOG_FORMAT=json does for the access line; text logs never do).
_LEFT_OUT = ("client.py", "_proto/", "logs.py")


class _Files:
    """Every service/ file a frame runs in, on any thread started after ``install``."""

    def __init__(self) -> None:
        self.recording = False
        self.seen: set[str] = set()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if self.recording:
            name = frame.f_code.co_filename
            if name.startswith(_SERVICE):
                self.seen.add(name[len(_SERVICE) :])

    @property
    def server_side(self) -> list[str]:
        return sorted(f for f in self.seen if not f.startswith(_LEFT_OUT))


@pytest.fixture
def files() -> Iterator[_Files]:
    # Installed before the server starts, so that its threads (the grpc loop, call
    # slots, embedding lanes) inherit the hook.
    recorder = _Files()
    threading.setprofile(recorder)
    sys.setprofile(recorder)
    try:
        yield recorder
    finally:
        recorder.recording = False
        sys.setprofile(None)
        threading.setprofile(None)


def test_a_plain_query_runs_through_at_most_the_files_listed(
    files: _Files, settings: Settings, tmp_path: Path
) -> None:
    with ExitStack() as stack:  # closed in reverse: the client, the server, the app
        app = App.open(settings.model_copy(update={"data_dir": tmp_path}))
        stack.callback(app.close)
        server = create_server(app, "127.0.0.1:0")
        stack.callback(server.stop, grace=1.0)
        user = app.identity.create_user(f"{tmp_path.name}@query-path")
        key = app.identity.create_key(user, Role.USER).key
        client = stack.enter_context(closing(connect(f"127.0.0.1:{server.port}", key)))
        ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="path"))
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=ds.id,
                documents=[pb.DocumentInput(external_id="a", text="cats sleep a lot")],
            )
        )
        ids = pb.DatastoreIds(ids=[ds.id])
        for _ in range(3):  # warm: caches filled, the connection's ef_search set
            client.retrieval.Query(pb.QueryRequest(datastores=ids, text="cats"))
        files.recording = True
        found = client.retrieval.Query(pb.QueryRequest(datastores=ids, text="dogs"))
        files.recording = False
    assert found.hits
    path = files.server_side
    assert "core/retrieval.py" in path and "storage/vector_search.py" in path, path
    assert len(path) <= MOST_FILES, (
        f"a plain Query now runs through {len(path)} service files (at most {MOST_FILES}): "
        + ", ".join(path)
    )
