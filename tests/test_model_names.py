"""Embedding models are chosen by name; no filesystem path from a request is ever touched."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from pydantic import ValidationError

from service.api.server import create_server
from service.app import App
from service.client import Client, connect, pb
from service.embedding.registry import ModelRegistry, bundled_model_path
from service.models import Role
from service.settings import BUNDLED_MODEL, Settings
from tests.helpers.rpc import status_of

_watched: list[str] = []  # path prefixes whose file-system audit events are recorded
_seen: list[tuple[str, str]] = []
_watch_lock = threading.Lock()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _watched or not event.startswith(("open", "os.", "shutil.")) or not args:
        return
    path = str(args[0])
    with _watch_lock:
        if any(path.startswith(prefix) for prefix in _watched):
            _seen.append((event, path))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one is idle unless watching


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[list[tuple[str, str]]]:
    """File-system events (open, listdir, scandir, ...) on anything under ``tmp_path``."""
    with _watch_lock:
        _seen.clear()
        _watched.append(str(tmp_path))
    yield _seen
    with _watch_lock:
        _watched.clear()


def fake_model_dir(root: Path) -> Path:
    folder = root / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_a_path_as_embedding_model_is_refused_without_touching_it(
    client: Client, tmp_path: Path, watch: list[tuple[str, str]]
) -> None:
    folder = fake_model_dir(tmp_path)
    assert ("open", str(folder / "config.json")) in watch  # the hook sees this test's own write
    watch.clear()
    messages = []
    for name in (str(folder), str(tmp_path / "absent"), str(bundled_model_path()), "x" * 300):
        code, msg = status_of(
            partial(
                client.datastores.CreateDatastore,
                pb.CreateDatastoreRequest(
                    name="m", config=pb.DatastoreConfig(embedding_model=name)
                ),
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, msg
        assert "config.embedding_model" in msg
        assert f"choose one of ['{BUNDLED_MODEL}', 'all-MiniLM-L6-v2']" in msg
        messages.append(msg.replace(name[:64], "NAME"))
    # An existing model folder and a missing path get the same answer: no oracle.
    assert messages[0] == messages[1]
    assert watch == []  # the server (in this process) opened and listed nothing there


def test_update_to_a_path_is_refused(client: Client, tmp_path: Path) -> None:
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="m"))
    code, msg = status_of(
        lambda: client.datastores.UpdateDatastore(
            pb.UpdateDatastoreRequest(
                datastore=pb.Datastore(
                    id=ds.id, config=pb.DatastoreConfig(embedding_model=str(tmp_path))
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["config.embedding_model"]),
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a model this server offers" in msg


def test_settings_take_names_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRIEVAL_MODELS", '{"e5-small": "/models/e5-small"}')
    monkeypatch.setenv("RETRIEVAL_PRELOAD_MODELS", '["e5-small"]')
    monkeypatch.setenv("RETRIEVAL_DEFAULT_EMBEDDING_MODEL", "e5-small")
    settings = Settings()
    assert settings.models == {"e5-small": "/models/e5-small"}
    assert settings.model_names == [BUNDLED_MODEL, "all-MiniLM-L6-v2", "e5-small"]
    for bad in (
        {"default_embedding_model": "/models/e5-small"},
        {"preload_models": ["/models/e5-small"]},
        {"preload_models": ["e5-large"]},
        {"models": {"none": "/models/x"}},
        {"models": {BUNDLED_MODEL: "/models/x"}},
        {"models": {"x": ""}},
    ):
        with pytest.raises(ValidationError):
            Settings(**bad)


def test_registry_knows_names_not_paths(tmp_path: Path, watch: list[tuple[str, str]]) -> None:
    folder = fake_model_dir(tmp_path)
    watch.clear()
    registry = ModelRegistry(models={"mine": str(folder)})
    assert registry.names() == [BUNDLED_MODEL, "all-MiniLM-L6-v2", "mine"]
    registry.check_name("mine")
    registry.check_name("none")
    with pytest.raises(Exception, match="not a model this server offers"):
        registry.check_name(str(folder))
    with pytest.raises(Exception, match="not available on this server"):
        registry.get(str(folder))
    assert watch == []


@pytest.fixture(scope="module")
def named_model_server(settings: Settings) -> Iterator[tuple[App, str]]:
    """A second server on the same database whose operator offers the bundled model's
    folder under the name ``mini``."""
    configured = settings.model_copy(
        update={"models": {"mini": str(bundled_model_path())}, "preload_models": ["mini"]}
    )
    app = App.open(configured)
    server = create_server(app, "127.0.0.1:0")
    try:
        yield app, f"127.0.0.1:{server.port}"
    finally:
        server.stop(grace=1.0)
        app.close()


def test_a_configured_name_serves_its_folder(named_model_server: tuple[App, str]) -> None:
    app, target = named_model_server
    user = app.identity.create_user(None)
    client = connect(target, app.identity.create_key(user, Role.USER).key)
    try:
        ds = client.datastores.CreateDatastore(
            pb.CreateDatastoreRequest(
                name="named", config=pb.DatastoreConfig(embedding_model="mini")
            )
        )
        assert (ds.config.embedding_model, ds.config.dimensions) == ("mini", 384)
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=ds.id,
                documents=[pb.DocumentInput(external_id="d", text="Cats purr when content.")],
            )
        )
        reply = client.retrieval.Query(
            pb.QueryRequest(
                datastores=pb.DatastoreIds(ids=[ds.id]),
                text="why do cats purr",
                similarity_threshold=0.3,
            )
        )
        assert [h.external_id for h in reply.hits] == ["d"]
    finally:
        client.close()
