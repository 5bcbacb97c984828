"""Helpers for the re-embedding and backup tests: an App + real gRPC server with
settings of the test's choosing, on the session's embedded PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest

from service.api.server import create_server
from service.app import App
from service.cli import main
from service.client import Client, connect, pb
from service.models import Role
from service.settings import Settings

# Twelve short texts on distinct topics: what the re-embedding and backup tests store.
TOPICS = [
    "PostgreSQL is a relational database with transactions and SQL.",
    "pgvector adds vector similarity search to PostgreSQL tables.",
    "HNSW is a graph index for approximate nearest neighbour search.",
    "Sourdough bread rises slowly with wild yeast and lactic bacteria.",
    "A espresso shot is brewed by forcing hot water through fine coffee.",
    "The marathon is a long distance race of about forty-two kilometres.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Jupiter is the largest planet of the solar system, a gas giant.",
    "The violin has four strings and is played with a bow.",
    "Glaciers carve valleys as they slowly move down a mountain.",
    "Rust's borrow checker prevents data races at compile time.",
    "Tides are caused mostly by the gravity of the moon.",
]


@dataclass
class Served:
    app: App
    client: Client
    key: str  # the client's credential, for a later ``serving`` on the same database


@contextmanager
def serving(settings: Settings, key: str | None = None, **overrides: object) -> Iterator[Served]:
    """An App (its own pool, worker and job threads) and gRPC server; ``key``: a
    credential made by an earlier ``serving`` (the same database), else a new user's."""
    app = App.open(settings.model_copy(update=overrides))
    server = create_server(app, "127.0.0.1:0")
    if key is None:
        user_id = app.identity.create_user(f"{uuid.uuid4().hex}@test")
        key = app.identity.create_key(user_id, Role.USER).key
    client = connect(f"127.0.0.1:{server.port}", key)
    try:
        yield Served(app, client, key)
    finally:
        client.close()
        server.stop(grace=1.0)
        app.close()


def expected_scores(app: App, model: str, query: str, contents: list[str], k: int) -> list[float]:
    """The top-k cosine scores of ``query`` over ``contents`` under ``model``."""
    embedder = app.embeddings.registry.get(model)
    q = embedder.embed([query])[0]
    docs = embedder.embed(contents)
    scores = docs @ q / (np.linalg.norm(docs, axis=1) * np.linalg.norm(q))
    return sorted((float(s) for s in scores), reverse=True)[:k]


def query_text(client: Client, datastore_id: str, text: str) -> pb.QueryResponse:
    return client.retrieval.Query(
        pb.QueryRequest(datastores=pb.DatastoreIds(ids=[datastore_id]), text=text)
    )


def run_cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, *args: str) -> int:
    """``python -m service ARGS`` in this process, on the tests' database."""
    from tests.helpers.paths import MODEL_CACHE

    monkeypatch.setenv("RETRIEVAL_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("RETRIEVAL_ONNX_CACHE_DIR", str(MODEL_CACHE))
    return main([*args, "--data-dir", str(settings.data_dir)])
