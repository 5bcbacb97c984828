"""Client helpers: typed stubs for every service over one channel, with the API key attached."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service._proto.agentopia.retrieval.v1 import retrieval_pb2_grpc as pb_grpc

__all__ = [
    "Client",
    "channel_credentials",
    "connect",
    "pb",
    "read_key_file",
    "wait_until_serving",
]


def wait_until_serving(
    target: str, timeout: float = 180.0, *, credentials: grpc.ChannelCredentials | None = None
) -> None:
    """Block until the health service at ``target`` reports SERVING (TimeoutError if never).

    ``credentials`` (from :func:`channel_credentials`) for a TLS server; plaintext otherwise.
    """
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise TimeoutError(f"server at {target} never reported SERVING")


def read_key_file(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self, base: grpc.ClientCallDetails, metadata: tuple[tuple[str, str | bytes], ...]
    ) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = base.compression


class _KeyInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <key>`` to every call."""

    def __init__(self, key: str) -> None:
        self._header: tuple[str, str | bytes] = ("authorization", f"Bearer {key}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(details, (*(details.metadata or ()), self._header))

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request_iterator)


@dataclass
class Client:
    channel: grpc.Channel
    datastores: pb_grpc.DatastoreServiceStub
    agents: pb_grpc.AgentServiceStub
    ingest: pb_grpc.IngestServiceStub
    retrieval: pb_grpc.RetrievalServiceStub

    def close(self) -> None:
        self.channel.close()


def channel_credentials(
    *,
    tls: bool = False,
    ca_file: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials for a channel, or None for plaintext.

    TLS is on when ``tls`` is true or any file is given. ``ca_file`` is the CA bundle that
    verifies the server (default: the system's roots); ``client_cert`` and ``client_key``
    (PEM, both or neither) answer a server that requires client certificates (mutual TLS).
    """
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key must be given together")
    if not (tls or ca_file or client_cert):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes() if ca_file else None,
        private_key=client_key.read_bytes() if client_key else None,
        certificate_chain=client_cert.read_bytes() if client_cert else None,
    )


def connect(
    target: str,
    api_key: str | None,
    *,
    max_message_bytes: int = 64 << 20,
    tls: bool = False,
    ca_file: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> Client:
    """A channel to ``target`` sending ``api_key`` on every call.

    Plaintext unless ``tls`` is true or a certificate file is given (see
    :func:`channel_credentials`); a server configured for TLS refuses plaintext callers.
    """
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    credentials = channel_credentials(
        tls=tls, ca_file=ca_file, client_cert=client_cert, client_key=client_key
    )
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    if api_key is not None:
        channel = grpc.intercept_channel(channel, _KeyInterceptor(api_key))
    return Client(
        channel=channel,
        datastores=pb_grpc.DatastoreServiceStub(channel),
        agents=pb_grpc.AgentServiceStub(channel),
        ingest=pb_grpc.IngestServiceStub(channel),
        retrieval=pb_grpc.RetrievalServiceStub(channel),
    )
