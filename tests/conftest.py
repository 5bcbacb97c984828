"""Shared fixtures: one real embedded PostgreSQL, one real App (real model) and gRPC server.

Each test gets its own user and API key, so tests are isolated by ownership and
never see each other's datastores.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from service.api.server import RetrievalServer, create_server
from service.app import App
from service.client import Client, connect
from service.models import Role
from service.settings import Settings
from service.storage.embedded import EmbeddedPostgres
from tests.helpers.paths import MODEL_CACHE

# Every log line of the run is checked for keys, tokens and registered texts.
pytest_plugins = ["tests.helpers.log_guard", "tests.helpers.http_fixtures"]


# Re-exported for the modules that still import them from here (test_serve, test_ingest_cli,
# fault_service); every other module imports tests.helpers directly.
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
