"""The gRPC server: the four services, health and reflection."""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service._proto.agentopia.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from service.api.decoding import DecodeInterceptor
from service.api.servicers.agents import AgentServicer
from service.api.servicers.datastores import DatastoreServicer
from service.api.servicers.ingest import IngestServicer
from service.api.servicers.retrieval import RetrievalServicer
from service.api.tls import add_port
from service.app import App

_log = logging.getLogger(__name__)

SERVICE_NAMES = [
    pb.DESCRIPTOR.services_by_name[name].full_name
    for name in ("DatastoreService", "AgentService", "IngestService", "RetrievalService")
]


class HealthMonitor:
    """SERVING while the database answers (models are loaded before the server starts)."""

    def __init__(self, app: App, servicer: health.HealthServicer, interval_s: float = 5.0) -> None:
        self._app = app
        self._servicer = servicer
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> None:
        self._set(self._app.db.ping())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._set(False)

    def serving(self) -> bool:
        """Whether the health service reports the whole server SERVING."""
        reply = self._servicer.Check(health_pb2.HealthCheckRequest(), None)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def _set(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *SERVICE_NAMES]:
            self._servicer.set(name, status)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._set(self._app.db.ping())


class RetrievalServer:
    """A started gRPC server bound to ``port``; ``stop()`` drains and shuts it down."""

    def __init__(self, server: grpc.Server, port: int, monitor: HealthMonitor) -> None:
        self.server = server
        self.port = port
        self._monitor = monitor

    def stop(self, grace: float = 5.0) -> None:
        self._monitor.stop()
        self.server.stop(grace).wait()

    def serving(self) -> bool:
        """Whether gRPC health says SERVING (the HTTP port's /readyz asks this)."""
        return self._monitor.serving()

    def wait(self) -> None:
        self.server.wait_for_termination()


def create_server(app: App, address: str) -> RetrievalServer:
    """Build, bind and start the server on ``address`` (port 0 picks a free one)."""
    settings = app.settings
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_workers, thread_name_prefix="rpc"),
        options=options,
        interceptors=[DecodeInterceptor()],
    )
    pb_grpc.add_DatastoreServiceServicer_to_server(
        DatastoreServicer(app.identity, app.datastores), server
    )
    pb_grpc.add_AgentServiceServicer_to_server(AgentServicer(app.identity, app.agents), server)
    pb_grpc.add_IngestServiceServicer_to_server(IngestServicer(app.identity, app.ingestion), server)
    pb_grpc.add_RetrievalServiceServicer_to_server(
        RetrievalServicer(app.identity, app.retrieval), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = add_port(server, address, settings)  # TLS when configured (api/tls.py)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    monitor = HealthMonitor(app, health_servicer)
    server.start()
    monitor.start()
    _log.info("gRPC server listening on %s (port %d)", address, port)
    return RetrievalServer(server, port, monitor)
