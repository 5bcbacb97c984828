"""The HTTP port: uvicorn serving ``HttpApp`` on its own thread, in the gRPC server's process."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent import futures

import uvicorn

from service.api.aio_bridge import Runner
from service.api.event_loop import new_event_loop
from service.api.http.asgi import HttpApp
from service.api.http.endpoints import build_endpoints
from service.api.limits import Gate, PrincipalSlots, current_slots
from service.api.servicers.agents import AgentServicer
from service.api.servicers.datastores import DatastoreServicer
from service.api.servicers.ingest import IngestServicer
from service.api.servicers.retrieval import RetrievalServicer
from service.api.tls import tls_files
from service.app import App

_log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0


def servicers(app: App) -> dict[str, object]:
    """The gRPC servicer classes (and so the one RPC wrapper), keyed by service name."""
    return {
        "DatastoreService": DatastoreServicer(app.identity, app.datastores),
        "AgentService": AgentServicer(app.identity, app.agents),
        "IngestService": IngestServicer(app.identity, app.ingestion, app.documents),
        "RetrievalService": RetrievalServicer(app.identity, app.retrieval),
    }


class HttpServer:
    """A started HTTP server bound to ``port``; ``stop()`` drains and shuts it down."""

    def __init__(
        self,
        server: uvicorn.Server,
        thread: threading.Thread,
        port: int,
        own_executor: futures.ThreadPoolExecutor | None,
    ) -> None:
        self._server = server
        self._thread = thread
        self.port = port
        self._own_executor = own_executor  # None: the gRPC server's, shut down with it

    def stop(self, grace: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(grace + 5.0)
        if self._own_executor is not None:
            self._own_executor.shutdown(wait=False, cancel_futures=True)


def listening_socket(host: str, port: int) -> socket.socket:
    """The HTTP port's bound TCP socket, its connections with Nagle's algorithm off.

    Its protocol is named (IPPROTO_TCP, not 0): asyncio turns TCP_NODELAY on only for
    sockets whose protocol says TCP. Without it each response's body, written after its
    headers, waited for the client's delayed ACK: a Connect call took 48 ms instead of
    5 (measured on a kept-alive connection). TCP_NODELAY is set here too; Linux passes
    it on to the connections the socket accepts, whatever the event loop.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def create_http_server(
    app: App,
    host: str,
    port: int,
    *,
    ready: Callable[[], bool],
    runner: Runner | None = None,
    grace: float = 5.0,
) -> HttpServer:
    """Bind ``host:port`` (port 0 picks a free one) and serve until ``stop()``.

    ``ready`` answers ``/readyz``: pass the gRPC server's health (SERVING or not).
    ``runner``, the gRPC server's, shares its threads, its bound on calls in flight and
    its per-principal slots (service/api/limits.py), so the two ports together stay
    within them; without it this server has its own.
    """
    settings = app.settings
    own_executor = None
    if runner is not None:
        executor, gate = runner.executor, runner.gate
    else:
        gate = Gate(settings.grpc_workers)
        executor = own_executor = futures.ThreadPoolExecutor(
            max_workers=gate.limit,
            thread_name_prefix="http-rpc",
            initializer=current_slots.set,
            initargs=(PrincipalSlots(settings.max_calls_per_principal),),
        )
    asgi = HttpApp(
        build_endpoints(servicers(app), executor, gate),
        ready=ready,
        max_message_bytes=settings.max_message_bytes,
        body_timeout_s=settings.http_body_timeout_s,
    )
    tls = tls_files(settings)  # the same certificates as the gRPC port, or plaintext on both
    config = uvicorn.Config(
        asgi,
        ssl_certfile=tls.cert_file if tls else None,
        ssl_keyfile=tls.key_file if tls else None,
        ssl_ca_certs=str(tls.client_ca_file) if tls and tls.client_ca_file else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.mutual else ssl.CERT_NONE,
        http="h11",
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=int(grace) or 1,
    )
    try:
        sock = listening_socket(host, port)
    except OSError as e:
        if own_executor is not None:
            own_executor.shutdown(wait=False)
        raise OSError(f"cannot bind the HTTP port to {host}:{port}: {e}") from e
    bound = int(sock.getsockname()[1])
    server = uvicorn.Server(config)

    def serve() -> None:
        with asyncio.Runner(loop_factory=new_event_loop) as loop_runner:
            loop_runner.run(server.serve(sockets=[sock]))

    thread = threading.Thread(target=serve, name="http", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            if own_executor is not None:
                own_executor.shutdown(wait=False)
            raise OSError(f"HTTP server on {host}:{bound} did not start")
        time.sleep(0.01)
    _log.info("HTTP server (Connect, gRPC-Web) listening on %s (port %d)", host, bound)
    return HttpServer(server, thread, bound, own_executor)
