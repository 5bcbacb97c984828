"""Start the HTTP port beside a running gRPC server, as the serve command does."""

from __future__ import annotations

from service.api.http.server import HttpServer, create_http_server
from service.api.server import RetrievalServer
from service.app import App


def start_http(app: App, grpc_server: RetrievalServer) -> HttpServer | None:
    """The HTTP server on ``host:http_port`` (ready while gRPC is SERVING); None when disabled.

    If the port cannot be bound, the gRPC server is stopped too and the error raised:
    a half-started service is worse than one that refuses to start.
    """
    settings = app.settings
    if not settings.http_enabled:
        return None
    try:
        server = create_http_server(
            app,
            settings.host,
            settings.http_port,
            ready=grpc_server.serving,
            runner=grpc_server.runner,
        )
    except OSError:
        grpc_server.stop(grace=0)
        raise
    print(
        f"HTTP (Connect, gRPC-Web, /healthz, /readyz, /metrics) on "
        f"http://{settings.host}:{server.port}",
        flush=True,
    )
    return server
