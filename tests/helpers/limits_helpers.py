"""Helpers for the robustness tests: a second server with other limits, idle and held calls."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import grpc

from service.api.server import create_server
from service.app import App
from service.client import pb

LIST_DATASTORES = "/agentopia.retrieval.v1.DatastoreService/ListDatastores"
STREAM_INGEST = "/agentopia.retrieval.v1.IngestService/StreamIngest"


@contextmanager
def server_with(app: App, **settings: object) -> Iterator[str]:
    """A server over the shared App with some settings changed; yields its target."""
    custom = dataclasses.replace(app, settings=app.settings.model_copy(update=settings))
    server = create_server(custom, "127.0.0.1:0")
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop(grace=1.0)


class IdleCalls:
    """Calls opened on ``channel`` that send no message until released."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._release = threading.Event()
        self.calls: list[grpc.Future[Any]] = []

    def _nothing(self) -> Iterator[bytes]:
        self._release.wait(60)
        yield from ()

    def open(self, method: str, count: int, key: str | None = None) -> None:
        metadata = (("authorization", f"Bearer {key}"),) if key else None
        stub = self._channel.stream_stream(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        for _ in range(count):
            call = stub(self._nothing(), metadata=metadata, timeout=60)
            self.calls.append(cast("grpc.Future[Any]", call))  # a streaming call is a Future too

    def close(self) -> None:
        self._release.set()
        for call in self.calls:
            call.cancel()


class HeldStream:
    """A StreamIngest that sent one document, got its result and stays open, holding a slot."""

    def __init__(self, channel: grpc.Channel, key: str, datastore_id: str) -> None:
        self._release = threading.Event()
        stub = channel.stream_stream(
            STREAM_INGEST,
            request_serializer=pb.StreamIngestRequest.SerializeToString,
            response_deserializer=pb.DocumentResult.FromString,
        )

        def requests() -> Iterator[pb.StreamIngestRequest]:
            chunk = pb.ChunkInput(content="held", vector=[1.0, 0.0, 0.0, 0.0])
            yield pb.StreamIngestRequest(
                datastore_id=datastore_id,
                document=pb.DocumentInput(external_id="held", chunks=[chunk]),
            )
            self._release.wait(60)

        self.call = stub(requests(), metadata=(("authorization", f"Bearer {key}"),), timeout=60)
        self.first = next(self.call)

    def close(self) -> None:
        self._release.set()
        self.call.cancel()
