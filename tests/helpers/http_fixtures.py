"""HTTP-port fixtures (a pytest plugin loaded by conftest): the shared server's HTTP side."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from service.api.http import HttpServer, create_http_server
from service.api.http.client import HttpClient, Protocol
from service.api.server import RetrievalServer
from service.app import App
from service.models import Role


@pytest.fixture(scope="session")
def http_server(app: App, server: RetrievalServer) -> Iterator[HttpServer]:
    srv = create_http_server(
        app, "127.0.0.1", 0, ready=server.serving, runner=server.runner, grace=1.0
    )
    yield srv
    srv.stop(grace=1.0)


@pytest.fixture(scope="session")
def http_url(http_server: HttpServer) -> str:
    return f"http://127.0.0.1:{http_server.port}"


@pytest.fixture
def start_http(app: App) -> Iterator[Callable[..., str]]:
    """Factory: an extra HTTP server over the shared App with some settings changed."""
    started: list[HttpServer] = []

    def start(ready: Callable[[], bool] = lambda: True, **changes: Any) -> str:
        changed = dataclasses.replace(app, settings=app.settings.model_copy(update=changes))
        srv = create_http_server(changed, "127.0.0.1", 0, ready=ready, grace=1.0)
        started.append(srv)
        return f"http://127.0.0.1:{srv.port}"

    yield start
    for srv in started:
        srv.stop(grace=1.0)


@pytest.fixture
def new_key(app: App) -> Callable[..., str]:
    """Factory: an API key of a brand-new user (or a service key)."""

    def make(role: Role = Role.USER) -> str:
        user_id = app.identity.create_user(f"{uuid.uuid4().hex}@test")
        return app.identity.create_key(user_id, role).key

    return make


@pytest.fixture
def http_client(http_url: str) -> Iterator[Callable[..., HttpClient]]:
    """Factory: ``make(key, protocol="connect", binary=True)`` on the shared HTTP port."""
    clients: list[HttpClient] = []

    def make(key: str | None, protocol: Protocol = "connect", binary: bool = True) -> HttpClient:
        client = HttpClient(http_url, key, protocol=protocol, binary=binary)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()
