"""TLS and mutual TLS: the server, the Python client and the ingest CLI, with certificates
made at test time; plaintext off loopback is refused at start-up.

The servers here are this module's own, on the session's App with TLS settings (same
database and loaded model), so the shared test server stays plaintext.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from devtools.serve_process import ServeFailed, ServeProcess
from ingest.cli import main as ingest_main
from service.api.server import RetrievalServer, create_server
from service.api.tls import check_bind, is_loopback, ssl_context
from service.app import App
from service.client import Client, channel_credentials, connect, pb, wait_until_serving
from service.errors import FailedPrecondition
from service.models import Role
from service.settings import Settings
from tests.helpers.rpc import status_of
from tests.helpers.tls_certs import Certs, make_certs

Serve = Callable[..., str]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def serve(app: App) -> Iterator[Serve]:
    """Factory: start a server with these extra settings; returns its 127.0.0.1 target."""
    servers: list[RetrievalServer] = []

    def start(**settings: object) -> str:
        tls_app = dataclasses.replace(app, settings=app.settings.model_copy(update=settings))
        server = create_server(tls_app, "127.0.0.1:0")
        servers.append(server)
        return f"127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.stop(grace=0.5)


@pytest.fixture
def key(app: App) -> str:
    user_id = app.identity.create_user(f"{uuid.uuid4().hex}@tls")
    return app.identity.create_key(user_id, Role.USER).key


def _list(client: Client) -> list[str]:
    try:
        reply = client.datastores.ListDatastores(pb.ListDatastoresRequest(), timeout=10)
        return [d.name for d in reply.datastores]
    finally:
        client.close()


def _tls_settings(certs: Certs, *, mutual: bool = False) -> dict[str, object]:
    settings: dict[str, object] = {
        "tls_cert_file": certs.server.cert,
        "tls_key_file": certs.server.key,
    }
    if mutual:
        settings["tls_client_ca_file"] = certs.ca
    return settings


def test_tls_call_works_and_plaintext_or_untrusted_callers_are_refused(
    serve: Serve, certs: Certs, key: str
) -> None:
    target = serve(**_tls_settings(certs))
    wait_until_serving(target, timeout=10, credentials=channel_credentials(ca_file=certs.ca))
    assert _list(connect(target, key, ca_file=certs.ca)) == []
    # a plaintext client: the handshake fails, no RPC reaches the service
    code, _ = status_of(lambda: _list(connect(target, key)))
    assert code == grpc.StatusCode.UNAVAILABLE
    # TLS without the test CA (system roots): the server's certificate is not trusted
    code, _ = status_of(lambda: _list(connect(target, key, tls=True)))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    serve: Serve, certs: Certs, key: str
) -> None:
    target = serve(**_tls_settings(certs, mutual=True))
    code, _ = status_of(lambda: _list(connect(target, key, ca_file=certs.ca)))
    assert code == grpc.StatusCode.UNAVAILABLE
    stranger = connect(
        target,
        key,
        ca_file=certs.ca,
        client_cert=certs.stranger.cert,
        client_key=certs.stranger.key,
    )
    code, _ = status_of(lambda: _list(stranger))
    assert code == grpc.StatusCode.UNAVAILABLE
    client = connect(
        target, key, ca_file=certs.ca, client_cert=certs.client.cert, client_key=certs.client.key
    )
    assert _list(client) == []


def test_a_client_certificate_does_not_replace_the_bearer_credential(
    serve: Serve, certs: Certs
) -> None:
    target = serve(**_tls_settings(certs, mutual=True))
    client = connect(
        target, None, ca_file=certs.ca, client_cert=certs.client.cert, client_key=certs.client.key
    )
    code, _ = status_of(lambda: _list(client))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_ingest_cli_over_mutual_tls(
    serve: Serve, certs: Certs, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = serve(**_tls_settings(certs, mutual=True))
    (tmp_path / "note.txt").write_text("Mutual TLS authenticates both ends of a connection.\n")
    common = [str(tmp_path / "note.txt"), "-d", "tls-notes", "--target", target]
    common += ["--api-key", key, "--progress", "never"]
    common += ["--failed-file", str(tmp_path / "failed.tsv")]
    # without a client certificate the server refuses the connection: nothing ingested
    assert ingest_main([*common, "--create", "--ca-file", str(certs.ca)]) == 3
    assert "UNAVAILABLE" in capsys.readouterr().err
    mtls = ["--tls", "--ca-file", str(certs.ca)]
    mtls += ["--client-cert", str(certs.client.cert), "--client-key", str(certs.client.key)]
    assert ingest_main([*common, "--create", *mtls]) == 0
    client = connect(
        target, key, ca_file=certs.ca, client_cert=certs.client.cert, client_key=certs.client.key
    )
    try:
        [datastore] = client.datastores.ListDatastores(pb.ListDatastoresRequest()).datastores
        docs = client.ingest.ListDocuments(pb.ListDocumentsRequest(datastore_id=datastore.id))
        assert [d.external_id for d in docs.documents] == ["note.txt"]
    finally:
        client.close()
    # a CA file missing on disk is a usage error, not a traceback
    assert ingest_main([*common, "--ca-file", str(tmp_path / "missing.pem")]) == 2


def test_plaintext_bind_off_loopback_is_refused_unless_allowed(certs: Certs) -> None:
    plain = Settings(database_url="postgresql://unused")
    for address in ("127.0.0.1:50051", "localhost:1", "[::1]:50051", "::1:50051", "unix:/tmp/s"):
        check_bind(plain, address)
    for address in ("0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051", "retrieval.internal:1"):
        with pytest.raises(FailedPrecondition, match="RETRIEVAL_ALLOW_PLAINTEXT"):
            check_bind(plain, address)
    check_bind(plain.model_copy(update={"allow_plaintext": True}), "0.0.0.0:50051")
    tls = plain.model_copy(update=_tls_settings(certs, mutual=True))
    check_bind(tls, "0.0.0.0:50051")
    assert not is_loopback("127.example.com")
    context = ssl_context(tls)  # the same files, for an HTTP server
    assert context is not None and context.verify_mode.name == "CERT_REQUIRED"
    with pytest.raises(ValueError, match="together"):
        Settings(database_url="postgresql://unused", tls_cert_file=certs.server.cert)


def test_create_server_refuses_plaintext_on_all_interfaces(app: App) -> None:
    with pytest.raises(FailedPrecondition, match="plaintext"):
        create_server(app, "0.0.0.0:0")


def test_serve_refuses_a_public_plaintext_bind_before_starting(tmp_path: Path) -> None:
    served = ServeProcess(tmp_path / "data", log=tmp_path / "serve.log", args=["--host", "0.0.0.0"])
    with pytest.raises(ServeFailed, match="exited with 2 before serving"):  # not a timeout
        served.start()
    output = served.output()
    assert "refusing to serve plaintext gRPC on 0.0.0.0" in output
    assert "RETRIEVAL_TLS_CERT_FILE" in output
    assert not (tmp_path / "data" / "pgdata").exists()  # refused before any start-up work


def test_http_port_speaks_tls_with_the_same_certificates(app: App, certs: Certs) -> None:
    """The Connect/HTTP port takes the gRPC port's TLS settings: no bearer key in the clear."""
    import ssl
    import urllib.error
    import urllib.request

    from service.api.http.server import create_http_server

    tls_app = dataclasses.replace(
        app, settings=app.settings.model_copy(update=_tls_settings(certs))
    )
    server = create_http_server(tls_app, "127.0.0.1", 0, ready=lambda: True)
    try:
        trusted = ssl.create_default_context(cafile=str(certs.ca))
        url = f"https://127.0.0.1:{server.port}/healthz"
        with urllib.request.urlopen(url, context=trusted, timeout=10) as reply:
            assert reply.status == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plaintext to TLS
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
    finally:
        server.stop(grace=0.5)
