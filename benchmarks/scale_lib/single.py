"""One datastore at a given size: ingest, HNSW build, latency, recall, size and memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from benchmarks.scale_lib import common
from benchmarks.scale_lib.vectors import Matrix, blocks, exact_top_k, recall_at_k, synthetic
from service.client import Client, pb
from service.models import HnswParams, Metric
from service.settings import Settings
from service.storage import partitions

EF_SWEEP = (100, 200, 400)
DEFAULT_MEMORY = 64  # MB: PostgreSQL's default maintenance_work_mem, what builds got before


def build_memory_mb(chunks: int) -> int:
    """Enough maintenance_work_mem for the graph: ~2.4 KB a 384-dim chunk at m=16, +25 %."""
    return max(64, round(chunks * 2.4 * 1.25 / 1024))


def _build(url: str, datastore_id: str, resources: partitions.BuildResources) -> float:
    """Drop the datastore's HNSW index and build it again the way the service does; seconds."""
    settings = Settings()
    hnsw = HnswParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)
    with psycopg.connect(url) as conn:
        partitions.drop_index(conn, UUID(datastore_id))
        start = time.perf_counter()
        partitions.create_index(
            conn, UUID(datastore_id), Metric.COSINE, common.DIMS, hnsw, resources=resources
        )
        conn.commit()
        return time.perf_counter() - start


def _bulk_load(client: Client, url: str, ds: str, base: Matrix, size: int, seed: int) -> float:
    """Chunks/s of StreamIngest (STREAMS at once) into the partition, HNSW index dropped."""
    with psycopg.connect(url, autocommit=True) as conn:
        partitions.drop_index(conn, UUID(ds))
    start = time.perf_counter()
    group: list[tuple[int, Matrix]] = []
    for first, rows in blocks(base, size, seed):
        group.append((first, rows))
        if len(group) == common.STREAMS or first + len(rows) == size:
            stored = common.ingest_parts(client, ds, group)
            if stored != sum(len(r) for _, r in group):
                raise RuntimeError(f"stored {stored} chunks of a group of {len(group)} blocks")
            group = []
            print(f"\r  loaded {first + len(rows)}/{size}", end="", flush=True)
    print()
    return size / (time.perf_counter() - start)


def measure(
    client: Client,
    data_dir: Path,
    service_pid: int,
    vectors: tuple[Matrix, Matrix],
    size: int,
    seed: int,
    save: Callable[[dict[str, Any]], None],
    *,
    compare_memory: bool,
) -> dict[str, Any]:
    """Every figure of one datastore of ``size`` chunks, ``save``d after each step.

    Order: load (index dropped), build, queries, sizes, then the incremental top-up,
    so that a run cut short still has the query figures.
    """
    base, queries = vectors
    url = common.pg_url(data_dir)
    ds = common.create_datastore(client, f"scale-{size}")
    row: dict[str, Any] = {"chunks": size, "total_chunks": size}
    row["ingest_no_index_chunks_per_s"] = _bulk_load(client, url, ds, base, size, seed)
    save(row)
    row.update(_builds(url, ds, size, compare_memory=compare_memory))
    save(row)
    row.update(_queries(client, ds, base, queries, size, seed))
    with psycopg.connect(url) as conn:
        row.update(common.relation_sizes_mb(conn, ds))
    row.update(common.postgres_memory_mb(data_dir))
    row["service_rss_mb"] = common.service_rss_mb(service_pid)
    save(row)
    top_up = min(max(size // 10, 1000), 10_000)
    row["ingest_incremental_chunks"] = top_up
    row["ingest_incremental_chunks_per_s"] = common.ingest_rate(
        client, ds, synthetic(base, size, top_up, seed), size
    )
    print(f"  incremental: {row['ingest_incremental_chunks_per_s']:.0f} chunks/s", flush=True)
    save(row)
    return row


def _builds(url: str, ds: str, size: int, *, compare_memory: bool) -> dict[str, Any]:
    """Build time with the memory the graph needs (and with PostgreSQL's default 64 MB)."""
    settings = Settings()
    out: dict[str, Any] = {}
    if compare_memory:  # what a build got before the service set maintenance_work_mem
        before = partitions.BuildResources(DEFAULT_MEMORY, 2, settings.index_build_timeout_s)
        out["build_s_64mb"] = _build(url, ds, before)
        print(f"  build with 64 MB: {out['build_s_64mb']:.1f} s", flush=True)
    memory = build_memory_mb(size)
    resources = partitions.BuildResources(
        memory, settings.index_build_parallel_workers, settings.index_build_timeout_s
    )
    out["build_memory_mb"] = memory
    out["build_parallel_workers"] = resources.parallel_workers
    out["build_s"] = _build(url, ds, resources)
    print(f"  build with {memory} MB: {out['build_s']:.1f} s", flush=True)
    return out


def _queries(
    client: Client, ds: str, base: Matrix, queries: Matrix, total: int, seed: int
) -> dict[str, Any]:
    target = pb.DatastoreIds(ids=[ds])
    one = [common.vector_query(target, q) for q in queries[:200]]
    eight = [common.vector_query(target, q) for q in queries[:400]]
    truth = exact_top_k(queries[:200], base, total, seed, common.K)
    out: dict[str, Any] = {}
    stats, found = common.timed_queries(client, one, 1)
    out["c1"] = stats
    out["recall_at_10"] = recall_at_k(found, truth, common.K)
    out["c8"], _ = common.timed_queries(client, eight, 8)
    print(f"  c1 {out['c1']}  recall {out['recall_at_10']:.4f}  c8 {out['c8']}", flush=True)
    if total <= 20_000:  # the service's own exact search agrees with the numpy ground truth
        exact = [common.vector_query(target, q, exact=True) for q in queries[:20]]
        _, found_exact = common.timed_queries(client, exact, 1)
        out["service_exact_recall_vs_numpy"] = recall_at_k(found_exact, truth[:20], common.K)
    sweep = {}
    for ef in EF_SWEEP:
        common.set_ef_search(client, ds, ef)
        stats, found = common.timed_queries(client, one, 1)
        sweep[str(ef)] = {**stats, "recall_at_10": recall_at_k(found, truth, common.K)}
    common.set_ef_search(client, ds, EF_SWEEP[0])
    out["ef_search_sweep"] = sweep
    return out
