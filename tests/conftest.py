"""Shared fixtures: one real embedded PostgreSQL, one real App (real model) and gRPC server.

Each test gets its own user and API key, so tests are isolated by ownership and
never see each other's datastores.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from service.api.server import RetrievalServer, create_server
from service.app import App
from service.client import Client, connect, pb
from service.models import Role
from service.settings import Settings
from service.storage.embedded import EmbeddedPostgres

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

# Every log line of the run is checked for keys, tokens and registered texts.
pytest_plugins = ["tests.log_guard", "tests.http_fixtures"]

REPO = Path(__file__).resolve().parent.parent
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
# Exported ONNX models outlive a test session (the export takes a while); .venv is ours.
MODEL_CACHE = REPO / ".venv" / "model-cache"


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "pgdata")
    url = embedded.start()
    yield url
    embedded.stop()


@pytest.fixture(scope="session")
def settings(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=pg_url,
        data_dir=tmp_path_factory.mktemp("data"),
        port=0,
        create_local_key=False,
        onnx_cache_dir=MODEL_CACHE,
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[App]:
    app = App.open(settings)
    yield app
    app.close()


@pytest.fixture(scope="session")
def server(app: App) -> Iterator[RetrievalServer]:
    srv = create_server(app, "127.0.0.1:0")
    yield srv
    srv.stop(grace=1.0)


@pytest.fixture(scope="session")
def target(server: RetrievalServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def make_client(app: App, target: str) -> Iterator[Callable[..., Client]]:
    """Factory: a client for a brand-new user (or a service key) on the shared server."""
    clients: list[Client] = []

    def make(role: Role = Role.USER) -> Client:
        user_id = app.identity.create_user(f"{uuid.uuid4().hex}@test")
        issued = app.identity.create_key(user_id, role)
        client = connect(target, issued.key)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


def vector_datastore(
    client: Client,
    metric: int = pb.COSINE,
    dimensions: int = 8,
    *,
    threshold: float = 0.0,
    max_results: int = 10,
    fallback: bool = True,
) -> pb.Datastore:
    """A bring-your-own-vectors datastore (embedding_model 'none')."""
    return client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name="vectors",
            similarity_metric=metric,  # type: ignore[arg-type]
            similarity_threshold=threshold,
            max_results=max_results,
            config=pb.DatastoreConfig(
                embedding_model="none",
                dimensions=dimensions,
                low_confidence_fallback=fallback,
            ),
        )
    )


def ingest_vectors(
    client: Client, datastore_id: str, vectors: np.ndarray, prefix: str = "v"
) -> None:
    """One single-chunk document per row, external_id ``{prefix}{row}``."""
    docs = [
        pb.DocumentInput(
            external_id=f"{prefix}{i}",
            chunks=[pb.ChunkInput(content=f"chunk {i}", vector=[float(x) for x in v])],
        )
        for i, v in enumerate(vectors)
    ]
    for start in range(0, len(docs), 500):
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=datastore_id, documents=docs[start : start + 500]
            )
        )


def query_vector(
    client: Client, datastore_ids: list[str], vector: list[float], **kwargs: object
) -> pb.QueryResponse:
    return client.retrieval.Query(
        pb.QueryRequest(
            datastores=pb.DatastoreIds(ids=datastore_ids),
            vector=pb.QueryVector(values=vector),
            **kwargs,  # type: ignore[arg-type]
        )
    )


def status_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """Run an RPC expected to fail; return its status code and details."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    return err.code(), err.details()  # type: ignore[attr-defined]
