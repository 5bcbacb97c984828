"""The gRPC server (grpc.aio): the four services, health and reflection."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import cast

import grpc
from grpc import aio
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service._proto.agentopia.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from service.api.aio_bridge import Handler, Runner
from service.api.decoding import tolerant_handler
from service.api.event_loop import new_event_loop
from service.api.limits import Gate, PrincipalSlots
from service.api.servicers.agents import AgentServicer
from service.api.servicers.datastores import DatastoreServicer
from service.api.servicers.ingest import IngestServicer
from service.api.servicers.retrieval import RetrievalServicer
from service.api.tls import add_port
from service.app import App
from service.settings import Settings

_log = logging.getLogger(__name__)

SERVICE_NAMES = [
    pb.DESCRIPTOR.services_by_name[name].full_name
    for name in ("DatastoreService", "AgentService", "IngestService", "RetrievalService")
]


class HealthMonitor:
    """SERVING while the database answers (models are loaded before the server starts)."""

    def __init__(
        self,
        app: App,
        servicer: health_async.HealthServicer,
        loop: asyncio.AbstractEventLoop,
        interval_s: float = 1.0,
    ) -> None:
        self._app = app
        self._servicer = servicer
        self._loop = loop
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._serving = False
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> None:
        self._set(self._app.db.ping())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._set(False)

    def serving(self) -> bool:
        """Whether the health service reports the whole server SERVING."""
        return self._serving

    def _set(self, serving: bool) -> None:
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

        async def set_all() -> None:
            for name in ["", *SERVICE_NAMES]:
                await self._servicer.set(name, status)

        asyncio.run_coroutine_threadsafe(set_all(), self._loop).result(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._set(self._app.db.ping())


class _Capture:
    """Collects the method handlers a generated ``add_*Servicer_to_server`` registers."""

    def __init__(self) -> None:
        self.handlers: dict[str, dict[str, Handler]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        self.handlers[service] = handlers


class RetrievalServer:
    """A started gRPC server bound to ``port``; ``stop()`` drains and shuts it down.

    The server runs on an asyncio loop in its own thread; calls run on ``runner``'s
    threads once their request has arrived (see service.api.aio_bridge).
    """

    def __init__(
        self,
        server: aio.Server,
        port: int,
        monitor: HealthMonitor,
        runner: Runner,
        loop_thread: threading.Thread,
    ) -> None:
        self.server = server
        self.port = port
        self.runner = runner
        self._monitor = monitor
        self._loop_thread = loop_thread
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let calls in flight finish for up to ``grace`` seconds
        (streams stop reading, commit what they read and end with UNAVAILABLE), then
        cancel what is left."""
        with self._lock:
            if self._stopped.is_set():
                return
            loop = self.runner.loop
            self._monitor.stop()
            asyncio.run_coroutine_threadsafe(self._stop(grace), loop).result(timeout=grace + 30)
            loop.call_soon_threadsafe(loop.stop)
            self._loop_thread.join(timeout=10)
            if not self._loop_thread.is_alive():
                loop.close()  # its self-pipe sockets and default executor
            self._stopped.set()

    async def _stop(self, grace: float) -> None:
        self.runner.drain()
        await self.server.stop(grace)
        self.runner.executor.shutdown(wait=False, cancel_futures=True)

    def serving(self) -> bool:
        """Whether gRPC health says SERVING (the HTTP port's /readyz asks this)."""
        return self._monitor.serving()

    def wait(self) -> None:
        self._stopped.wait()


def _server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Dead peers are found by pings; clients may not ping more than every 10 s.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * 1000)),
        ("grpc.max_concurrent_streams", 256),
    ]


def create_server(app: App, address: str) -> RetrievalServer:
    """Build, bind and start the server on ``address`` (port 0 picks a free one)."""
    loop = new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-loop", daemon=True)
    thread.start()
    try:
        return asyncio.run_coroutine_threadsafe(_start(app, address, loop, thread), loop).result()
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        raise


async def _start(
    app: App, address: str, loop: asyncio.AbstractEventLoop, thread: threading.Thread
) -> RetrievalServer:
    settings = app.settings
    runner = Runner(
        loop=loop,
        gate=Gate(settings.grpc_workers),
        slots=PrincipalSlots(settings.max_calls_per_principal),
        read_ahead_bytes=settings.stream_read_ahead_bytes,
        idle_timeout_s=settings.stream_idle_timeout_s,
    )
    # Idle calls (no request yet) cost no thread; this bounds how many may be open at all.
    server = aio.server(
        options=_server_options(settings),
        maximum_concurrent_rpcs=max(1024, 16 * settings.grpc_workers),
    )
    capture = _Capture()
    target = cast(grpc.Server, capture)  # it takes what the generated code registers
    pb_grpc.add_DatastoreServiceServicer_to_server(
        DatastoreServicer(app.identity, app.datastores), target
    )
    pb_grpc.add_AgentServiceServicer_to_server(AgentServicer(app.identity, app.agents), target)
    pb_grpc.add_IngestServiceServicer_to_server(
        IngestServicer(app.identity, app.ingestion, app.documents), target
    )
    pb_grpc.add_RetrievalServiceServicer_to_server(
        RetrievalServicer(app.identity, app.retrieval), target
    )
    for service, handlers in capture.handlers.items():
        wrapped = {
            name: runner.wrap(tolerant_handler(h, f"/{service}/{name}"))
            for name, h in handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
    health_servicer = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    # TLS when configured (api/tls.py); aio's add_*_port take the same arguments
    port = add_port(cast(grpc.Server, server), address, settings)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    monitor = HealthMonitor(app, health_servicer, loop)
    await server.start()
    await loop.run_in_executor(None, monitor.start)
    _log.info("gRPC server listening on %s (port %d)", address, port)
    return RetrievalServer(server, port, monitor, runner, thread)
