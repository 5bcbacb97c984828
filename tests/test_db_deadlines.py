"""A call's deadline and cancellation reach its SQL: the statement is cancelled on the
server, the call ends DEADLINE_EXCEEDED or CANCELLED, and nothing of it keeps running.

The search (exact, over 30k chunks of 1,024 dimensions, with a filter of 200
conditions every chunk passes) runs for seconds when nothing stops it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from psycopg import sql
from psycopg.types.json import Jsonb

from service import call_scope
from service.app import App
from service.client import Client, connect, pb
from service.errors import Cancelled, DeadlineExceeded
from service.models import Principal, Role
from service.query_models import QuerySpec
from service.storage.partitions import index_name, partition_name
from tests.helpers.rpc import status_of, vector_datastore

DIMS = 1024
# A few hundred ms: how soon a deadline or a cancellation must end the call and its
# statement (in a full run on a loaded 2-core machine one such call took 0.74 s).
WINDOW_S = 0.8
ROWS = 60_000  # about 2 s of exact search: the checks' windows leave room for load
BASE = 500  # distinct random vectors, each stored ROWS / BASE times (setup speed)


def _fill(app: App, ds_id: str) -> None:
    """ROWS chunks straight into the datastore's partition (no HNSW upkeep: the exact
    search needs no index, and building one would dominate the test's time)."""
    part = sql.Identifier(partition_name(uuid.UUID(ds_id)))
    with app.db.connection() as conn:
        conn.execute(
            sql.SQL("DROP INDEX public.{}").format(sql.Identifier(index_name(uuid.UUID(ds_id))))
        )
        doc = conn.execute(
            "INSERT INTO public.datastore_documents (datastore_id, external_id, content_sha256,"
            " chunk_count) VALUES (%s, 'big', '', %s) RETURNING id",
            (ds_id, ROWS),
        ).fetchone()
        assert doc is not None
        conn.execute(
            sql.SQL(
                "INSERT INTO public.{} (datastore_id, document_id, chunk_index, content, metadata,"
                " embedding)"
                " SELECT %(ds)s, %(doc)s, (b.i - 1) * %(copies)s + r - 1, 'x', %(meta)s, b.e"
                " FROM (SELECT i, (SELECT array_agg(random()::real)"
                "                  FROM generate_series(1, %(dims)s) WHERE i > 0)::vector AS e"
                "       FROM generate_series(1, %(base)s) i) b,"
                " generate_series(1, %(copies)s) r"
            ).format(part),
            {
                "ds": ds_id,
                "doc": doc[0],
                "meta": Jsonb({"k": "x"}),
                "copies": ROWS // BASE,
                "dims": DIMS,
                "base": BASE,
            },
        )


@dataclass
class Big:
    client: Client
    principal: Principal
    ds_id: str
    unbounded_s: float  # how long its exact search takes when nothing stops it

    def spec(self) -> QuerySpec:
        vector = np.ones(DIMS, dtype=np.float32)
        return QuerySpec(
            datastore_ids=(uuid.UUID(self.ds_id),), vector=vector, exact=True, filter=FILTER
        )


@pytest.fixture(scope="module")
def big(app: App, target: str) -> Iterator[Big]:
    """A datastore of ROWS chunks, owned by a service key (exact search may be
    limited to those)."""
    user_id = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    key = app.identity.create_key(user_id, Role.SERVICE).key
    client = connect(target, key)
    ds = vector_datastore(client, dimensions=DIMS)
    _fill(app, ds.id)
    client.retrieval.Query(exact_query(ds.id))  # reads the partition into the cache
    start = time.monotonic()
    client.retrieval.Query(exact_query(ds.id))
    unbounded = time.monotonic() - start
    yield Big(client, app.identity.authenticate(key), ds.id, unbounded)
    client.datastores.DeleteDatastore(pb.DeleteDatastoreRequest(id=ds.id))
    client.close()


# Every chunk passes it, after 200 comparisons (a big `$in` list would be hashed: cheap).
# With it, the exact search takes seconds; without it, 50k chunks of this width took
# 0.2 s once in memory, too close to the deadline to tell a cancelled statement from a
# finished one.
FILTER = {"$and": [{"k": {"$ne": f"v{i}"}} for i in range(200)]}


def exact_query(ds_id: str) -> pb.QueryRequest:
    vector = np.random.default_rng(7).random(DIMS).tolist()
    query_filter = struct_pb2.Struct()
    query_filter.update(FILTER)
    return pb.QueryRequest(
        datastores=pb.DatastoreIds(ids=[ds_id]),
        vector=pb.QueryVector(values=vector),
        exact=True,
        filter=query_filter,
    )


def running(app: App, ds_id: str) -> int:
    """Backends running a statement on the datastore's partition now (its parallel
    workers included), other than this one."""
    with app.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND pid <> pg_backend_pid() AND query LIKE %s",
            (f"%{partition_name(uuid.UUID(ds_id))}%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


def gone_within(seconds: float, check: Callable[[], bool]) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_a_50ms_deadline_ends_the_call_and_its_statement(app: App, big: Big) -> None:
    # twice the WINDOW_S the checks below allow: a statement left running would still be seen
    assert big.unbounded_s > 2 * WINDOW_S, f"too fast to mean anything: {big.unbounded_s:.2f} s"
    start = time.monotonic()
    code, _ = status_of(lambda: big.client.retrieval.Query(exact_query(big.ds_id), timeout=0.05))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < WINDOW_S
    # The server cancelled the statement at the deadline, long before it would end.
    assert gone_within(WINDOW_S, lambda: running(app, big.ds_id) == 0)


def test_the_server_reports_the_deadline_as_deadline_exceeded(app: App, big: Big) -> None:
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded), call_scope.opened(0.05):
        app.retrieval.query(big.principal, big.spec())
    assert time.monotonic() - start < WINDOW_S
    assert running(app, big.ds_id) == 0


def test_a_cancelled_call_cancels_its_statement(app: App, big: Big) -> None:
    future = big.client.retrieval.Query.future(exact_query(big.ds_id))
    assert gone_within(2.0, lambda: running(app, big.ds_id) >= 1)  # the search is under way
    future.cancel()
    assert gone_within(WINDOW_S, lambda: running(app, big.ds_id) == 0)
    with pytest.raises(grpc.FutureCancelledError):
        future.result()


def test_the_server_reports_a_cancelled_call_as_cancelled(app: App, big: Big) -> None:
    start = time.monotonic()
    with pytest.raises(Cancelled), call_scope.opened(None) as call:
        threading.Timer(0.1, call.cancel).start()
        app.retrieval.query(big.principal, big.spec())
    assert time.monotonic() - start < 0.5
    assert running(app, big.ds_id) == 0


def test_a_call_past_its_deadline_never_borrows_a_connection(app: App) -> None:
    with pytest.raises(DeadlineExceeded), call_scope.opened(0.0), app.db.connection():
        pass


def test_without_a_deadline_the_server_statement_timeout_applies(app: App) -> None:
    with app.db.connection() as conn:
        row = conn.execute("SHOW statement_timeout").fetchone()
    assert row == (f"{round(app.settings.statement_timeout_s)}s",)
