"""A server of a test module's own: its own Settings, on the session's database.

For behaviour that needs settings the shared server must not have (JWTs, short cache
lifetimes). No models are loaded: such tests use caller-supplied vectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.api.server import create_server
from service.app import App
from service.settings import Settings
from tests.helpers.paths import MODEL_CACHE


@contextmanager
def own_server(pg_url: str, data_dir: Path, **settings: Any) -> Iterator[tuple[App, str]]:
    """``(app, "127.0.0.1:port")`` for an App with ``settings`` and its gRPC server."""
    app = App.open(
        Settings(
            database_url=pg_url,
            data_dir=data_dir,
            port=0,
            create_local_key=False,
            onnx_cache_dir=MODEL_CACHE,
            preload_models=[],
            **settings,
        ),
        load_models=False,
    )
    try:
        server = create_server(app, "127.0.0.1:0")
        try:
            yield app, f"127.0.0.1:{server.port}"
        finally:
            server.stop(grace=1.0)
    finally:
        app.close()
