"""Many small datastores: create time, query time, start-up, catalog; agents over them."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from pgvector.psycopg import register_vector

from benchmarks._harness import Served, serve_process
from benchmarks.scale_lib import common
from benchmarks.scale_lib.vectors import Matrix, synthetic
from service.client import Client, connect, pb
from service.storage import datastores as datastore_rows
from service.storage import vector_search as search

AGENT_SIZES = (1, 10, 50)
TIMED_CREATES = 20  # the last this many creates before a level is reached are its figure


@contextmanager
def serving(data_dir: Path, log: Path, settings: dict[str, str]) -> Iterator[tuple[Served, float]]:
    """The service, and its start-up time (process start to SERVING; 0.5 s resolution)."""
    start = time.perf_counter()
    with serve_process(data_dir, log, **settings) as served:
        yield served, time.perf_counter() - start


def _add(client: Client, base: Matrix, number: int, seed: int) -> tuple[str, float]:
    """Create datastore ``number`` (timed, ms) and give it one document of 8 chunks."""
    start = time.perf_counter()
    ds = common.create_datastore(client, f"small-{number}")
    ms = (time.perf_counter() - start) * 1000
    vectors = synthetic(base, number * common.CHUNKS_PER_DOC, common.CHUNKS_PER_DOC, seed)
    docs = list(common.documents(vectors, number * common.CHUNKS_PER_DOC))
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(datastore_id=ds, documents=docs), timeout=60
    )
    return ds, ms


def planning_ms(url: str, datastore_id: str, vector: Matrix) -> float:
    """PostgreSQL's planning time of the service's search statement on one datastore."""
    with psycopg.connect(url) as conn:
        register_vector(conn)
        datastore = datastore_rows.get(conn, UUID(datastore_id))
        assert datastore is not None
        query, params = search.build_query(datastore, vector, common.K, 0.0)
        times = []
        for _ in range(5):
            plan = conn.execute(
                psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(query), params
            ).fetchone()
            assert plan is not None
            doc = plan[0] if isinstance(plan[0], list) else json.loads(plan[0])
            times.append(float(doc[0]["Planning Time"]))
        return statistics.median(times)


def _agent_figures(client: Client, ids: list[str], queries: Matrix) -> dict[str, Any]:
    agent = client.agents.CreateAgent(pb.CreateAgentRequest(name="scale-agent", active=True))
    out: dict[str, Any] = {}
    attached = 0
    for size in AGENT_SIZES:
        if size > len(ids):
            break
        for ds in ids[attached:size]:
            client.agents.AttachDatastore(
                pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds)
            )
        attached = size
        requests = [common.vector_query(str(agent.id), q) for q in queries[:100]]
        stats, _ = common.timed_queries(client, requests, 1)
        out[str(size)] = stats
        print(f"  agent with {size} datastores: {stats}", flush=True)
    return out


def _grow(client: Client, base: Matrix, ids: list[str], level: int, seed: int) -> list[float]:
    """Create datastores until there are ``level``; the last TIMED_CREATES create times."""
    creates = []
    while len(ids) < level:
        ds, ms = _add(client, base, len(ids), seed)
        ids.append(ds)
        if len(ids) > max(level - TIMED_CREATES, 1):
            creates.append(ms)
        if len(ids) % 250 == 0:
            print(f"\r  {len(ids)} datastores", end="", flush=True)
    print(f"\n  {level} datastores: create p50 {statistics.median(creates):.1f} ms", flush=True)
    return creates


def _level_figures(
    client: Client, data_dir: Path, served: Served, ids: list[str], queries: Matrix
) -> dict[str, Any]:
    """Query p50 on the newest and oldest datastore, planning, catalog and memory."""
    row: dict[str, Any] = {}
    for name, ds in (("newest", ids[-1]), ("oldest", ids[0])):
        requests = [common.vector_query(pb.DatastoreIds(ids=[ds]), q) for q in queries[:100]]
        row[f"query_{name}"], _ = common.timed_queries(client, requests, 1)
    url = common.pg_url(data_dir)
    row["planning_ms"] = planning_ms(url, ids[-1], queries[0])
    with psycopg.connect(url) as conn:
        row.update(common.catalog_figures(conn))
    row.update(common.postgres_memory_mb(data_dir))
    row["service_rss_mb"] = common.service_rss_mb(served.pid)
    return row


def run(
    data_dir: Path,
    log_dir: Path,
    settings: dict[str, str],
    levels: list[int],
    vectors: tuple[Matrix, Matrix],
    seed: int,
    save: Callable[[str, Any], None],
) -> None:
    """Grow to each level, then restart and measure; ``save(key, value)`` as figures come."""
    base, queries = vectors
    ids: list[str] = []
    figures: dict[str, Any] = {}
    for level in levels:
        with serving(data_dir, log_dir / f"serve-grow-{level}.log", settings) as (served, _):
            client = connect(served.target, served.key)
            creates = _grow(client, base, ids, level, seed)
            client.close()
        with serving(data_dir, log_dir / f"serve-{level}.log", settings) as (served, up):
            client = connect(served.target, served.key)
            row: dict[str, Any] = {
                "datastores": level,
                "create_p50_ms": statistics.median(creates),
                "create_max_ms": max(creates),
                "startup_s": up,
                **_level_figures(client, data_dir, served, ids, queries),
            }
            print(f"  {json.dumps(row)}", flush=True)
            figures[str(level)] = row
            save("many_datastores", figures)
            if level == levels[-1]:
                agents = _agent_figures(client, ids, queries)
                save("agents", {"datastores_in_service": level, **agents})
            client.close()
