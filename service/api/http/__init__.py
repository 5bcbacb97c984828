"""The HTTP transport: the gRPC services over Connect and gRPC-Web, plus health and metrics."""

from service.api.http.server import HttpServer, create_http_server

__all__ = ["HttpServer", "create_http_server"]
