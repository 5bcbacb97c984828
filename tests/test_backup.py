"""Backups and restores: pg_dump/pg_restore into a fresh database, and the portable
per-datastore JSON lines export/import, each giving back the same query results."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from service.app import App
from service.client import Client, connect, pb
from service.models import Role
from service.settings import Settings
from service.storage.embedded import client_bin_dir
from tests.helpers.reembed_support import TOPICS, query_text, run_cli, serving
from tests.helpers.rpc import query_vector, struct, vector_datastore

QUERIES = ["which database does vector search", "coffee", "planets and moons", "music"]


def _results(client: Client, datastore_id: str) -> list[list[tuple[object, ...]]]:
    """What every query returns, without the chunk ids (an import assigns new ones)."""
    out: list[list[tuple[object, ...]]] = []
    for text in QUERIES:
        hits = query_text(client, datastore_id, text).hits
        out.append(
            [
                (h.external_id, h.chunk_index, h.content, h.title, dict(h.metadata), h.score)
                for h in hits
            ]
        )
    return out


@dataclass
class Owner:
    user_id: uuid.UUID
    key: str
    client: Client


@pytest.fixture
def owner(app: App, target: str) -> Iterator[Owner]:
    user_id = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    key = app.identity.create_key(user_id, Role.USER).key
    client = connect(target, key)
    yield Owner(user_id, key, client)
    client.close()


def _filled(client: Client) -> pb.Datastore:
    ds = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name="notes",
            description="to be moved",
            similarity_metric=pb.DOT,
            similarity_threshold=0.1,
            max_results=4,
        )
    )
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[
                pb.DocumentInput(
                    external_id=f"doc-{i}", title=f"topic {i}", text=t, metadata=struct({"n": i})
                )
                for i, t in enumerate(TOPICS)
            ],
        )
    )
    return ds


def test_export_and_import_give_the_same_query_results(
    owner: Owner,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    user_id, client = owner.user_id, owner.client
    ds = _filled(client)
    before = _results(client, ds.id)
    assert run_cli(monkeypatch, settings, "export-datastore", ds.id) == 0
    exported = capsys.readouterr().out
    dump = tmp_path / "notes.jsonl"
    dump.write_text(exported, encoding="utf-8")
    lines = exported.splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "agentopia-retrieval-datastore"
    assert header["datastore"]["similarity_metric"] == "dot"
    assert len(lines) == 1 + len(TOPICS)
    assert len(json.loads(lines[1])["chunks"][0]["vector"]) == 384

    assert (
        run_cli(monkeypatch, settings, "import-datastore", str(dump), "--user-id", str(user_id))
        == 0
    )
    imported_id = capsys.readouterr().out.strip()
    assert imported_id != ds.id
    copy = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=imported_id))
    original = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds.id))
    assert (copy.name, copy.description, copy.config) == (
        original.name,
        original.description,
        original.config,
    )
    assert (copy.document_count, copy.chunk_count) == (len(TOPICS), original.chunk_count)
    assert _results(client, imported_id) == before


def test_a_pinecone_dump_imports_into_a_datastore_of_caller_vectors(
    owner: Owner,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    user_id, client = owner.user_id, owner.client
    records = [
        {"id": "a", "values": [1.0, 0.0, 0.0], "metadata": {"text": "alpha", "genre": "x"}},
        {"id": "b", "values": [0.0, 1.0, 0.0], "metadata": {"text": "beta"}},
        {"id": "c", "values": [0.6, 0.8, 0.0], "metadata": {}},
    ]
    dump = tmp_path / "pinecone.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    args = ["import-datastore", str(dump), "--format", "pinecone", "--name", "from-pinecone"]
    assert run_cli(monkeypatch, settings, *args, "--user-id", str(user_id)) == 0
    imported_id = capsys.readouterr().out.strip()
    got = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=imported_id))
    assert (got.config.embedding_model, got.config.dimensions, got.document_count) == ("none", 3, 3)
    hits = query_vector(client, [imported_id], [1.0, 0.0, 0.0]).hits
    assert [(h.external_id, h.content) for h in hits[:2]] == [("a", "alpha"), ("c", "c")]
    assert dict(hits[0].metadata) == {"genre": "x"}
    assert hits[0].score == pytest.approx(1.0)


def test_a_refused_import_names_the_line(
    owner: Owner,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    user_id, client = owner.user_id, owner.client
    ds = vector_datastore(client, pb.COSINE, 2)
    assert run_cli(monkeypatch, settings, "export-datastore", ds.id) == 0
    header = capsys.readouterr().out.splitlines()[0]
    bad = {"external_id": "x", "chunks": [{"content": "c", "vector": [1.0, "NaN"]}]}
    dump = tmp_path / "bad.jsonl"
    dump.write_text(header + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    code = run_cli(monkeypatch, settings, "import-datastore", str(dump), "--user-id", str(user_id))
    assert code == 2
    assert "line 2" in capsys.readouterr().err
    stranger = str(uuid.uuid4())
    assert run_cli(monkeypatch, settings, "import-datastore", str(dump), "--user-id", stranger) == 2
    assert f"no user {stranger}" in capsys.readouterr().err


def test_pg_dump_and_pg_restore_into_a_fresh_database_give_the_same_results(
    owner: Owner, settings: Settings, tmp_path: Path
) -> None:
    client = owner.client
    ds = _filled(client)
    before = _results(client, ds.id)
    source = str(settings.database_url)
    name = f"restored_{uuid.uuid4().hex[:12]}"
    restored = source.replace("/postgres?", f"/{name}?", 1)
    assert restored != source
    dump = tmp_path / "service.dump"
    bin_dir = client_bin_dir()
    subprocess.run(
        [bin_dir / "pg_dump", "--format=custom", f"--file={dump}", f"--dbname={source}"],
        check=True,
        timeout=300,
    )
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        subprocess.run(
            [bin_dir / "pg_restore", "--exit-on-error", f"--dbname={restored}", dump],
            check=True,
            timeout=300,
        )
        # The restored database holds the same users and (hashed) keys.
        with serving(settings, owner.key, database_url=restored) as served:
            assert _results(served.client, ds.id) == before
            got = served.client.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds.id))
            assert (got.document_count, got.chunk_count) == (len(TOPICS), len(TOPICS))
    finally:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
