"""A whole service (App + gRPC server) of its own, for tests that break its database,
and the ingest job and integrity checks they share."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.server import create_server
from service.app import App
from service.client import Client, connect, pb
from service.models import Role
from service.settings import Settings
from tests.helpers.paths import MODEL_CACHE
from tests.helpers.rpc import vector_datastore

DIMS = 8
DOCS_PER_BATCH = 25
CHUNKS_PER_DOC = 3


@dataclass
class Service:
    app: App
    client: Client
    health: health_pb2_grpc.HealthStub

    def serving(self) -> bool:
        try:
            reply = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@contextmanager
def running_service(data_dir: Path, database_url: str | None = None) -> Iterator[Service]:
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        port=0,
        create_local_key=False,
        onnx_cache_dir=MODEL_CACHE,
    )
    app = App.open(settings, load_models=False)  # caller-supplied vectors only
    server = create_server(app, "127.0.0.1:0")
    target = f"127.0.0.1:{server.port}"
    user_id = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    client = connect(target, app.identity.create_key(user_id, Role.USER).key)
    channel = grpc.insecure_channel(target)
    try:
        yield Service(app, client, health_pb2_grpc.HealthStub(channel))
    finally:
        channel.close()
        client.close()
        server.stop(grace=1.0)
        app.close()


def batch(ds_id: str, n: int) -> pb.IngestDocumentsRequest:
    docs = []
    for d in range(DOCS_PER_BATCH):
        i = n * DOCS_PER_BATCH + d
        chunks = [
            pb.ChunkInput(content=f"doc {i} chunk {c}", vector=[float(i + 1), float(c + 1)] * 4)
            for c in range(CHUNKS_PER_DOC)
        ]
        docs.append(pb.DocumentInput(external_id=f"doc-{i:05d}", chunks=chunks))
    return pb.IngestDocumentsRequest(datastore_id=ds_id, documents=docs)


@dataclass
class IngestJob:
    """Sends batches 0..n-1 in a thread, one after another, whatever each returns."""

    client: Client
    ds_id: str
    batches: int
    outcomes: list[grpc.StatusCode] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> IngestJob:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        for n in range(self.batches):
            try:
                self.client.ingest.IngestDocuments(batch(self.ds_id, n), timeout=10)
                self.outcomes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                self.outcomes.append(e.code())
            time.sleep(0.02)

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(timeout=120)

    def rerun(self) -> None:
        """The job run again after the fault: every batch must now go through."""
        for n in range(self.batches):
            self.client.ingest.IngestDocuments(batch(self.ds_id, n), timeout=30)


def new_datastore(svc: Service) -> str:
    return vector_datastore(svc.client, dimensions=DIMS).id


def integrity(app: App, ds_id: str) -> dict[str, int]:
    """Documents, and how many are partial (chunk rows != chunk_count) or duplicated."""
    with app.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*),"
            " count(*) FILTER (WHERE d.chunk_count <> (SELECT count(*) FROM datastore_chunks c"
            "   WHERE c.datastore_id = d.datastore_id AND c.document_id = d.id)),"
            " count(*) - count(DISTINCT d.external_id)"
            " FROM datastore_documents d WHERE d.datastore_id = %s",
            (ds_id,),
        ).fetchone()
    assert row is not None
    return {"documents": int(row[0]), "partial": int(row[1]), "duplicate": int(row[2])}


def wait_for(condition: Callable[[], bool], timeout: float, every: float = 0.05) -> float | None:
    """Seconds until ``condition()`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(every)
    return None
