"""Call the HTTP port from Python through connectrpc's client (tests, benchmarks, scripts).

``HttpClient(base_url, api_key, protocol="connect" | "grpc-web", binary=True)``;
``client.call("RetrievalService", "Query", request)`` returns the response message
or raises ``connectrpc.errors.ConnectError`` with the service's code and message.
"""

from __future__ import annotations

from typing import Any, Literal

from connectrpc.client import ConnectClientSync
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.method import MethodInfo
from connectrpc.protocol import ProtocolType
from google.protobuf.message import Message

from service.api.http.endpoints import SERVICES, method_info

Protocol = Literal["connect", "grpc-web"]

_METHODS: dict[tuple[str, str], MethodInfo[Any, Any]] = {
    (service.name, method.name): method_info(method)
    for service in SERVICES
    for method in service.methods
}


class HttpClient:
    """One connectrpc client for every service, with the API key attached."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        protocol: Protocol = "connect",
        binary: bool = True,
        timeout_ms: int | None = None,
    ) -> None:
        codec = google_protobuf_binary_codec() if binary else google_protobuf_json_codec()
        self._client = ConnectClientSync(
            base_url,
            codec=codec,
            protocol=ProtocolType.GRPC_WEB if protocol == "grpc-web" else ProtocolType.CONNECT,
            send_compression=None,
            accept_compression=(),
            timeout_ms=timeout_ms,
        )
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    def call(self, service: str, method: str, request: Message) -> Any:
        return self._client.execute_unary(
            request=request, method=_METHODS[(service, method)], headers=self._headers
        )

    def close(self) -> None:
        self._client.close()
