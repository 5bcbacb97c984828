"""Read replicas over real streaming replication: routing, read-your-writes, failover.

A primary and a hot standby (``pg_basebackup -R``) from the wheel's binaries; a real
App and gRPC server with the standby in read_database_urls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from service.api.server import RetrievalServer, create_server
from service.app import App
from service.client import Client, connect, pb
from service.errors import InvalidArgument
from service.models import Role
from service.settings import Settings
from service.storage.replicas import format_token, lag_s, parse_token
from tests.helpers.paths import MODEL_CACHE
from tests.helpers.pg_replica import ReplicatedPair
from tests.helpers.rpc import query_vector, status_of, vector_datastore

T = TypeVar("T")
_BOUND_S = 10.0  # a query after the replica's loss is answered within this


def test_tokens_round_trip_and_malformed_ones_are_refused() -> None:
    for lsn in (0, 1, 0x16_B374D848, (1 << 64) - 1):
        assert parse_token(format_token(lsn)) == lsn
    assert parse_token("") is None
    for bad in ("0/16B3748", "lsn1.16", "lsn1.x.1", "lsn1.123456789.1", " lsn1.1.1"):
        with pytest.raises(InvalidArgument):
            parse_token(bad)


def test_lag_is_the_age_of_the_newest_primary_position_replayed() -> None:
    samples = [(10.0, 100), (11.0, 200), (12.0, 300)]
    assert lag_s(samples, 300, now=12.0) == 0.0  # replayed the latest sample
    assert lag_s(samples, 450, now=12.5) == 0.5  # past it: at most the time since
    assert lag_s(samples, 250, now=12.0) == 1.0  # reached the 11.0 position, not 12.0
    assert lag_s(samples, 100, now=12.0) == 2.0
    assert lag_s(samples, 99, now=12.0) is None  # behind everything kept
    assert lag_s([], 1, now=1.0) is None


def test_settings_refuse_replicas_without_a_primary_url() -> None:
    with pytest.raises(ValueError, match="read_database_urls needs database_url"):
        Settings(read_database_urls=["postgresql://127.0.0.1:1/x"])


@dataclass
class Replicated:
    pair: ReplicatedPair
    app: App
    server: RetrievalServer
    client: Client


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    with ReplicatedPair() as pair:
        settings = Settings(
            database_url=pair.primary.url,
            read_database_urls=[pair.standby.url],
            max_replica_lag_s=2.0,
            replica_check_interval_s=0.2,
            data_dir=tmp_path,
            port=0,
            create_local_key=False,
            onnx_cache_dir=MODEL_CACHE,
            preload_models=[],
        )
        app = App.open(settings, load_models=False)
        try:
            server = create_server(app, "127.0.0.1:0")
            try:
                user = app.identity.create_user("replicas@test")
                issued = app.identity.create_key(user, Role.USER)
                client = connect(f"127.0.0.1:{server.port}", issued.key)
                try:
                    yield Replicated(pair, app, server, client)
                finally:
                    client.close()
            finally:
                server.stop(grace=1.0)
        finally:
            app.close()


def _served(pool: str) -> float:
    return REGISTRY.get_sample_value("retrieval_reads_served_total", {"pool": pool}) or 0.0


def _in_use(pool: str) -> float | None:
    return REGISTRY.get_sample_value("retrieval_read_pool_in_use", {"pool": pool})


def _served_by(call: Callable[[], T]) -> tuple[T, str]:
    """Run one read; return its answer and the pool that served it."""
    before = {p: _served(p) for p in ("primary", "replica0")}
    answer = call()
    served = [p for p in before if _served(p) > before[p]]
    assert len(served) == 1, served
    return answer, served[0]


def _query(client: Client, ds: str, vector: list[float], token: str = "") -> tuple[list[str], str]:
    """The external ids a query finds, and the pool that served it."""
    found, pool = _served_by(lambda: query_vector(client, [ds], vector, consistency_token=token))
    return [h.external_id for h in found.hits], pool


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _ingest(client: Client, datastore_id: str, external_id: str, vector: list[float]) -> str:
    response = client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=datastore_id,
            documents=[
                pb.DocumentInput(
                    external_id=external_id, chunks=[pb.ChunkInput(content="c", vector=vector)]
                )
            ],
        )
    )
    assert response.results[0].consistency_token == response.consistency_token
    return response.consistency_token


def test_reads_follow_the_replica_tokens_and_failover(replicated: Replicated) -> None:
    client, reads = replicated.client, replicated.app.reads
    _wait(lambda: reads.in_use()["replica0"])  # the standby is found and caught up
    assert _in_use("replica0") == 1 and _in_use("primary") == 0
    ds = vector_datastore(client, dimensions=3).id
    x, y = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    token = _ingest(client, ds, "first", x)
    lsn = parse_token(token)
    assert lsn is not None

    # Read-your-writes: with the token, whoever answers has the new document.
    assert _query(client, ds, x, token)[0] == ["first"]
    # A token past anything the replica has replayed: only the primary may answer.
    assert _query(client, ds, x, format_token(lsn + (1 << 40))) == (["first"], "primary")

    # Once the replica has replayed the write (next check), it answers reads, token or not.
    _wait(lambda: all(r.usable and r.replay_lsn >= lsn for r in reads.replicas()))
    assert _query(client, ds, x) == (["first"], "replica0")
    assert _query(client, ds, x, token) == (["first"], "replica0")
    got, pool = _served_by(
        lambda: client.ingest.GetDocument(
            pb.GetDocumentRequest(datastore_id=ds, external_id="first")
        )
    )
    assert pool == "replica0" and got.document.external_id == "first"

    code, details = status_of(lambda: query_vector(client, [ds], x, consistency_token="0/16B"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "consistency_token" in details

    # The replica goes away: queries are still answered, by the primary, in bounded time.
    replicated.pair.standby.stop("immediate")
    for _ in range(3):
        started = time.monotonic()
        assert _query(client, ds, x) == (["first"], "primary")
        assert time.monotonic() - started < _BOUND_S
    _wait(lambda: _in_use("primary") == 1 and _in_use("replica0") == 0)
    assert not reads.replicas()[0].usable
    token = _ingest(client, ds, "second", y)
    assert _query(client, ds, y, token) == (["second", "first"], "primary")

    # Health stays SERVING: the primary is fine.
    with grpc.insecure_channel(f"127.0.0.1:{replicated.server.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
