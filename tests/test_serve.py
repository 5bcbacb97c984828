"""`python -m service serve` as a user runs it: fresh data dir, key, health, reflection, stop."""

from __future__ import annotations

import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.serve_process import ServeProcess
from service.client import connect, pb, read_key_file
from service.storage.migrations import available_migrations, migrate
from tests.helpers.paths import MODEL_CACHE

GRPCURL = Path(sys.executable).parent / "grpcurl"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServeProcess]:
    """On its own embedded PostgreSQL in a fresh data directory, as a user runs it."""
    settings = {"onnx_cache_dir": MODEL_CACHE}
    with ServeProcess(tmp_path / "data", log=tmp_path / "serve.log", settings=settings) as s:
        yield s


def test_fresh_start_creates_a_key_serves_and_shuts_down_cleanly(served: ServeProcess) -> None:
    key_file = served.data_dir / "api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = read_key_file(key_file)
    client = connect(served.target, key)
    try:
        ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="quickstart"))
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=ds.id,
                documents=[pb.DocumentInput(external_id="1", text="PostgreSQL stores vectors.")],
            )
        )
        hits = client.retrieval.Query(
            pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds.id]), text="vector database")
        ).hits
        assert [h.external_id for h in hits] == ["1"]
    finally:
        client.close()

    # the serve command starts the HTTP port (Connect, gRPC-Web, probes) beside gRPC
    with urllib.request.urlopen(f"http://127.0.0.1:{served.http_port}/readyz", timeout=5) as r:
        assert r.status == 200

    listed = subprocess.run(
        [str(GRPCURL), "-plaintext", served.target, "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(listed) == sorted(
        [
            "agentopia.retrieval.v1.AgentService",
            "agentopia.retrieval.v1.DatastoreService",
            "agentopia.retrieval.v1.IngestService",
            "agentopia.retrieval.v1.RetrievalService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    )

    assert served.stop() == 0
    out = served.output()
    assert key not in out  # stdout is a pipe here (a log): the key stays in its file
    assert f"it is in {key_file}" in out
    assert "shutting down" in out
    assert not (served.data_dir / "pgdata" / "postmaster.pid").exists()  # embedded PG stopped

    # a restart reuses the data directory and its key; no new key is printed
    served.start()
    client = connect(served.target, key)
    try:
        names = [
            d.name for d in client.datastores.ListDatastores(pb.ListDatastoresRequest()).datastores
        ]
    finally:
        client.close()
    assert names == ["quickstart"]
    assert "Created local user" not in served.output()
    assert read_key_file(key_file) == key

    # killed, serve cannot stop its embedded PostgreSQL; the launcher's close() does
    served.kill()
    postmaster = int((served.data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    assert _running(postmaster)
    served.close()
    assert not _running(postmaster)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_migrations_are_idempotent(pg_url: str) -> None:
    versions = [m.version for m in available_migrations()]
    assert versions == list(range(1, len(versions) + 1))
    migrate(pg_url)  # applies whatever is pending (nothing, if the session app ran first)
    assert migrate(pg_url) == []
