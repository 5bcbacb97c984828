"""TLS and mutual TLS for the service's ports, and the rule against plaintext off loopback.

One place reads the certificate settings; the gRPC server takes
:func:`server_credentials`, an HTTP server (uvicorn) takes :func:`tls_files` (its
``ssl_certfile``/``ssl_keyfile``/``ssl_ca_certs``) or :func:`ssl_context`. Bearer
credentials cross the network in the clear without TLS, so a non-loopback bind is
refused unless TLS is on or ``RETRIEVAL_ALLOW_PLAINTEXT=true`` says a proxy terminates it.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from service.errors import FailedPrecondition
from service.settings import Settings


@dataclass(frozen=True)
class TlsFiles:
    """Where the server's certificate, key and (for mutual TLS) client CA are."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None


def tls_files(settings: Settings) -> TlsFiles | None:
    """The configured files, or None when the service speaks plaintext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return TlsFiles(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise FailedPrecondition(f"cannot read {setting} {path}: {e.strerror}") from e


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """gRPC server credentials (client certificates required when a client CA is set)."""
    files = tls_files(settings)
    if files is None:
        return None
    pair = (
        _read(files.key_file, "RETRIEVAL_TLS_KEY_FILE"),
        _read(files.cert_file, "RETRIEVAL_TLS_CERT_FILE"),
    )
    ca = None
    if files.client_ca_file is not None:
        ca = _read(files.client_ca_file, "RETRIEVAL_TLS_CLIENT_CA_FILE")
    return grpc.ssl_server_credentials(
        [pair], root_certificates=ca, require_client_auth=ca is not None
    )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The same certificates as a server-side ``ssl.SSLContext`` (TLS 1.2 or later)."""
    files = tls_files(settings)
    if files is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert_file, files.key_file)
        if files.client_ca_file is not None:
            context.load_verify_locations(files.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise FailedPrecondition(f"cannot load the TLS certificate settings: {e}") from e
    return context


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (a ``[::1]`` form included)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve to a routable address


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0] if ":" in address else address


def check_bind(settings: Settings, address: str) -> None:
    """Refuse plaintext on a non-loopback ``address`` (``host:port``) unless allowed.

    Raises:
        FailedPrecondition: naming the two ways out.
    """
    if address.startswith("unix:") or tls_files(settings) is not None:
        return
    host = _host(address)
    if is_loopback(host) or settings.allow_plaintext:
        return
    raise FailedPrecondition(
        f"refusing to serve plaintext gRPC on {host}: bearer credentials would cross the "
        "network in the clear. Set RETRIEVAL_TLS_CERT_FILE and RETRIEVAL_TLS_KEY_FILE, or "
        "RETRIEVAL_ALLOW_PLAINTEXT=true when a TLS-terminating proxy or a private network "
        "carries the traffic (docs/security.md)"
    )


def add_port(server: grpc.Server, address: str, settings: Settings) -> int:
    """Bind ``address`` with TLS when configured, after :func:`check_bind`; returns the port."""
    check_bind(settings, address)
    credentials = server_credentials(settings)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)
