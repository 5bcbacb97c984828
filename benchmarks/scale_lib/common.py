"""What every scale section needs: ingest with vectors, timed vector queries, probes."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from google.protobuf.field_mask_pb2 import FieldMask

from benchmarks._harness import percentile
from benchmarks.scale_lib.vectors import Matrix
from service.client import Client, pb
from service.storage import partitions

DIMS = 384
CHUNKS_PER_DOC = 8
DOCS_PER_STREAM = 2000
STREAMS = 4  # concurrent StreamIngest calls of a load, as a loading client would run
K = 10


def create_datastore(client: Client, name: str) -> str:
    """A datastore for caller-supplied 384-dim vectors (cosine, VECTOR mode)."""
    reply = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name=name,
            config=pb.DatastoreConfig(embedding_model="none", dimensions=DIMS),
            similarity_threshold=0.0,
            max_results=K,
        )
    )
    return str(reply.id)


def documents(vectors: Matrix, first_chunk: int) -> Iterator[pb.DocumentInput]:
    """Documents of CHUNKS_PER_DOC chunks; chunk g is chunk g % 8 of document "d{g // 8}"."""
    for i in range(0, len(vectors), CHUNKS_PER_DOC):
        number = (first_chunk + i) // CHUNKS_PER_DOC
        yield pb.DocumentInput(
            external_id=f"d{number}",
            chunks=[
                pb.ChunkInput(content=f"passage {number} part {j}", vector=row.tolist())
                for j, row in enumerate(vectors[i : i + CHUNKS_PER_DOC])
            ],
        )


def stream_ingest(client: Client, datastore_id: str, docs: Iterator[pb.DocumentInput]) -> int:
    """Send ``docs`` over StreamIngest, DOCS_PER_STREAM per stream; the chunks stored."""
    stored = 0
    while True:
        batch = [d for _, d in zip(range(DOCS_PER_STREAM), docs, strict=False)]
        if not batch:
            return stored
        requests = (pb.StreamIngestRequest(datastore_id=datastore_id, document=d) for d in batch)
        for result in client.ingest.StreamIngest(requests, timeout=600):
            if result.status == pb.FAILED:
                raise RuntimeError(f"ingest failed: {result.error}")
            stored += result.chunk_count


def ingest_rate(client: Client, datastore_id: str, vectors: Matrix, first: int) -> float:
    """Chunks/s of STREAMS concurrent StreamIngest calls storing ``vectors`` (from ``first``)."""
    step = -(-len(vectors) // (STREAMS * CHUNKS_PER_DOC)) * CHUNKS_PER_DOC
    parts = [(first + i, vectors[i : i + step]) for i in range(0, len(vectors), step)]
    start = time.perf_counter()
    stored = ingest_parts(client, datastore_id, parts)
    if stored != len(vectors):
        raise RuntimeError(f"stored {stored} chunks of {len(vectors)}")
    return stored / (time.perf_counter() - start)


def ingest_parts(client: Client, datastore_id: str, parts: Sequence[tuple[int, Matrix]]) -> int:
    """Each (first chunk, vectors) part over its own StreamIngest, all at once; chunks stored."""
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        counts = pool.map(
            lambda part: stream_ingest(client, datastore_id, documents(part[1], part[0])), parts
        )
        return sum(counts)


def chunk_number(hit: Any) -> int:
    return int(str(hit.external_id)[1:]) * CHUNKS_PER_DOC + int(hit.chunk_index)


def vector_query(target: pb.DatastoreIds | str, vector: Matrix, *, exact: bool = False) -> Any:
    values = pb.QueryVector(values=vector.tolist())
    if isinstance(target, str):
        return pb.QueryRequest(agent_id=target, vector=values, max_results=K, exact=exact)
    return pb.QueryRequest(datastores=target, vector=values, max_results=K, exact=exact)


def timed_queries(
    client: Client, requests: Sequence[Any], concurrency: int
) -> tuple[dict[str, float], list[list[int]]]:
    """p50/p99 (ms) and QPS of ``requests`` run ``concurrency`` at a time; each one's hits."""
    latencies = [0.0] * len(requests)
    found: list[list[int]] = [[] for _ in requests]
    lock = threading.Lock()

    def one(i: int) -> None:
        start = time.perf_counter()
        reply = client.retrieval.Query(requests[i], timeout=60)
        ms = (time.perf_counter() - start) * 1000
        with lock:
            latencies[i] = ms
            found[i] = [chunk_number(h) for h in reply.hits]

    for r in requests[:5]:
        client.retrieval.Query(r, timeout=60)  # warm the connections and the plan cache
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(len(requests))))
    elapsed = time.perf_counter() - start
    stats = {
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 99),
        "qps": len(requests) / elapsed,
        "queries": len(requests),
    }
    return stats, found


def set_ef_search(client: Client, datastore_id: str, ef_search: int) -> None:
    client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=datastore_id, config=pb.DatastoreConfig(hnsw=pb.HnswConfig(ef_search=ef_search))
            ),
            update_mask=FieldMask(paths=["config.hnsw.ef_search"]),
        )
    )


# ------------------------------------------------------------------ probes


def pg_url(data_dir: Path) -> str:
    return f"postgresql://postgres:@/postgres?host={data_dir.resolve() / 'pgdata'}"


def _status_kb(pid: int, field: str, source: str = "status") -> int:
    try:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def postgres_memory_mb(data_dir: Path) -> dict[str, float]:
    """Resident memory of the embedded PostgreSQL: PSS (shared pages split) and RSS, summed."""
    postmaster = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return {
        "pg_pss_mb": sum(_status_kb(p, "Pss", "smaps_rollup") for p in pids) / 1024,
        "pg_rss_mb": sum(_status_kb(p, "VmRSS") for p in pids) / 1024,
        "pg_processes": len(pids),
    }


def service_rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def relation_sizes_mb(conn: psycopg.Connection, datastore_id: str) -> dict[str, float]:
    ds = UUID(datastore_id)
    row = conn.execute(
        "SELECT pg_total_relation_size(%s::regclass), pg_relation_size(%s::regclass),"
        " pg_database_size(current_database())",
        (f"public.{partitions.partition_name(ds)}", f"public.{partitions.index_name(ds)}"),
    ).fetchone()
    assert row is not None
    return {
        "partition_mb": float(row[0]) / 2**20,
        "hnsw_index_mb": float(row[1]) / 2**20,
        "database_mb": float(row[2]) / 2**20,
    }


def catalog_figures(conn: psycopg.Connection) -> dict[str, float]:
    row = conn.execute(
        "SELECT sum(pg_total_relation_size(c.oid)), (SELECT count(*) FROM pg_class),"
        " pg_database_size(current_database())"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'pg_catalog' AND c.relkind = 'r'"
    ).fetchone()
    assert row is not None
    return {
        "catalog_mb": float(row[0]) / 2**20,
        "relations": int(row[1]),
        "database_mb": float(row[2]) / 2**20,
    }
