"""A query sends all its searches to the database in one round trip; a plain query
over one datastore sends its search statement alone.

libpq's protocol trace of the pooled connection shows what the client sent: statements
(Parse/Bind/Execute) go out in batches, each ended by a message the client then waits
on (Sync, Flush, or a simple Query such as COMMIT).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import psycopg
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from pgvector.psycopg import register_vector

from service.app import App
from service.client import Client, pb
from service.storage import vector_search
from tests.helpers.rpc import struct, text_datastore

DOCS = [
    ("water", "Rivers carry water to the sea.", "nature"),
    ("pump", "A pump moves water through pipes.", "machines"),
    ("stars", "Stars burn hydrogen into helium.", "nature"),
]


@pytest.fixture
def traced(app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Protocol messages the client sent while a call thread held a pooled connection.

    Only connections taken by the threads that serve calls (named ``rpc_*``) are
    traced: background threads (the spare-partition filler, woken by this test's own
    CreateDatastore calls, among them) share the pool and would add their statements.
    """
    sent: list[str] = []
    plain = app.db.connection
    traces = itertools.count()

    @contextmanager
    def connection() -> Iterator[psycopg.Connection]:
        if not threading.current_thread().name.startswith("rpc"):
            with plain() as conn:
                yield conn
            return
        trace = tmp_path / f"libpq-{next(traces)}.trace"
        with plain() as conn, trace.open("w") as f:
            conn.pgconn.trace(f.fileno())
            conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                yield conn
                conn.commit()  # what the pool would send (nothing, outside a transaction)
            finally:
                conn.pgconn.untrace()
        sent.extend(
            line.split("\t")[2].split(" ")[0]
            for line in trace.read_text().splitlines()
            if line.startswith("F\t")
        )

    monkeypatch.setattr(app.db, "connection", connection)
    yield sent


def texts(client: Client) -> str:
    """A datastore holding DOCS."""
    ds = text_datastore(client, "round trips", max_results=2)
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[
                pb.DocumentInput(external_id=e, text=t, metadata=struct({"topic": topic}))
                for e, t, topic in DOCS
            ],
        )
    )
    return ds.id


T = TypeVar("T")
LOOKUP_KINDS = ("key", "user", "datastore")


def traced_call(app: App, traced: list[str], call: Callable[[], T]) -> T:
    """``call()`` with ``traced`` holding only its messages, on a warm settings cache.

    Cached keys and settings expire (a TTL) or are dropped by a change notification that
    arrives when it arrives; a call that had to reload them is measured again (at most 5
    times), so the count is the query path's own, never a lookup's.
    """
    for _ in range(5):
        loads = [app.lookups.loads(k) for k in LOOKUP_KINDS]
        traced.clear()
        result = call()
        if [app.lookups.loads(k) for k in LOOKUP_KINDS] == loads:
            return result
    raise AssertionError("the settings cache was reloaded during every traced call")


def batches(sent: list[str]) -> list[list[str]]:
    """The messages sent, split after each one the client waits on."""
    out: list[list[str]] = [[]]
    for message in sent:
        out[-1].append(message)
        if message in ("Sync", "Flush", "Query"):
            out.append([])
    return [b for b in out if b]


# Statements per datastore: vector = settings + search; keyword = search;
# hybrid = settings + vector search + keyword search.
@pytest.mark.parametrize(
    ("mode", "query_filter", "statements"),
    [
        (pb.VECTOR, None, 2),
        (pb.VECTOR, struct({"topic": "nature"}), 2),
        (pb.KEYWORD, None, 1),
        # (with a filter, hybrid's deep candidate list outnumbers these few chunks: the
        # short filtered scan is repeated exactly, a second round trip by design)
        (pb.HYBRID, None, 3),
    ],
    ids=["vector", "vector-filtered", "keyword", "hybrid"],
)
def test_a_query_over_two_datastores_is_one_round_trip(
    client: Client,
    app: App,
    traced: list[str],
    mode: int,
    query_filter: struct_pb2.Struct | None,
    statements: int,
) -> None:
    ids = [texts(client), texts(client)]
    request = pb.QueryRequest(
        datastores=pb.DatastoreIds(ids=ids),
        text="water",
        mode=mode,  # type: ignore[arg-type]
        filter=query_filter,
    )
    client.retrieval.Query(request)  # loads the datastores' settings into the cache
    got = traced_call(app, traced, lambda: client.retrieval.Query(request))
    assert sorted(h.datastore_id for h in got.hits) == sorted(ids * 2)  # 2 from each
    assert got.hits[0].external_id in ("water", "pump")
    # The search settings and every search (both sides of hybrid, both datastores) in
    # one batch, no BEGIN or COMMIT; then psycopg's closing Sync (and Flush), with no
    # statement in them.
    sent = batches(traced)
    assert sent[0][-1] == "Sync"
    assert sent[0].count("Execute") == 2 * statements
    assert {m for b in sent[1:] for m in b} <= {"Sync", "Flush"}, sent
    assert "Query" not in traced


def test_pipeline_settings_hold_until_the_sync_and_no_further(app: App) -> None:
    """SET LOCAL in the pipeline's implicit transaction: for the statements queued after
    it, never for a later request on the same pooled connection."""
    with app.db.pipeline() as (conn, pipeline):
        backend = conn.info.backend_pid
        conn.execute("SELECT set_config('hnsw.ef_search', '321', true)")
        inside = conn.execute("SHOW hnsw.ef_search")
        pipeline.sync()
        assert inside.fetchone() == ("321",)
        after_sync = conn.execute("SHOW hnsw.ef_search")
        pipeline.sync()
        assert after_sync.fetchone() != ("321",)
    with ExitStack() as held:  # borrow until the pool lends that connection again
        for _ in range(app.settings.pool_max_size):
            conn = held.enter_context(app.db.connection())
            if conn.info.backend_pid == backend:
                break
        assert conn.info.backend_pid == backend
        assert not conn.autocommit  # lent in transaction mode again
        assert conn.execute("SHOW hnsw.ef_search").fetchone() != ("321",)


def test_a_plain_query_over_one_datastore_is_its_search_statement_alone(
    client: Client, app: App, traced: list[str]
) -> None:
    """No pipeline and no settings statement once the connection has the datastore's
    hnsw.ef_search for its session."""
    ds_id = texts(client)
    request = pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds_id]), text="water")
    # The pool lends its connections in turn; psycopg prepares a statement on its fifth
    # run on a connection (one Parse round trip, once): warm every connection past that.
    for _ in range(6 * app.settings.pool_max_size):
        client.retrieval.Query(request)
    got = traced_call(app, traced, lambda: client.retrieval.Query(request))
    assert got.hits[0].external_id == "water"
    sent = batches(traced)
    assert len(sent) == 1, sent
    assert sent[0][-1] == "Sync"
    assert sent[0].count("Execute") == 1
    assert "Query" not in traced


def test_a_changed_ef_search_reaches_the_session_before_the_search(
    client: Client, app: App, traced: list[str]
) -> None:
    ds_id, other = texts(client), texts(client)
    request = pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds_id]), text="water")
    client.retrieval.Query(request)
    client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=ds_id, config=pb.DatastoreConfig(hnsw=pb.HnswConfig(ef_search=77))
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["config.hnsw.ef_search"]),
        )
    )
    # The update empties the settings cache (a notification that arrives when it arrives):
    # load it again outside the trace.
    client.retrieval.Query(pb.QueryRequest(datastores=pb.DatastoreIds(ids=[other]), text="x"))
    assert app.lookups.datastore(uuid.UUID(ds_id)).config.hnsw.ef_search == 77  # type: ignore[union-attr]
    traced_call(app, traced, lambda: client.retrieval.Query(request))
    assert traced.count("Execute") == 2  # set_config('hnsw.ef_search', '77', false), search


def test_search_alone_sets_ef_search_once_per_session_and_set_local_leaves_it(
    app: App, client: Client, pg_url: str
) -> None:
    ds_id = texts(client)
    datastore = app.lookups.datastore(uuid.UUID(ds_id))
    assert datastore is not None
    vector = np.ones(datastore.config.dimensions, dtype=np.float32)
    ef = str(datastore.config.hnsw.ef_search)
    # A connection new to search_alone (configured as the pool configures its own).
    with psycopg.connect(pg_url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("SET hnsw.ef_search = 40")
        vector_search.search_alone(conn, datastore, vector, k=2, threshold=0.0)
        assert conn.execute("SHOW hnsw.ef_search").fetchone() == (ef,)
        with conn.pipeline() as pipeline:  # another query's SET LOCAL, then its end
            conn.execute("SELECT set_config('hnsw.ef_search', '321', true)")
            pipeline.sync()
        assert conn.execute("SHOW hnsw.ef_search").fetchone() == (ef,)
        found = vector_search.search_alone(conn, datastore, vector, k=2, threshold=0.0)
    assert len(found) == 2
