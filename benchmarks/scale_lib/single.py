"""One datastore at a given size: ingest, HNSW build, latency, recall, size and memory."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Options:
    """What to measure besides the defaults: the ef_search values swept, the 64 MB build at
    ``compare_memory_at`` chunks, the sweep again with PostgreSQL's ``shared_buffers`` raised
    to ``shared_buffers_mb`` (ALTER SYSTEM, then a restart of the embedded server), the
    incremental top-up, and indexes rebuilt with other (m, ef_construction)."""

    ef_sweep: Sequence[int] = EF_SWEEP
    compare_memory_at: int | None = 100_000
    shared_buffers_mb: int | None = None
    top_up: bool = True
    rebuilds: Sequence[tuple[int, int]] = ()


def build_memory_mb(chunks: int) -> int:
    """Enough maintenance_work_mem for the graph: ~2.4 KB a 384-dim chunk at m=16, +25 %."""
    return max(64, round(chunks * 2.4 * 1.25 / 1024))


def _build(
    url: str,
    datastore_id: str,
    resources: partitions.BuildResources,
    graph: tuple[int, int] | None = None,
) -> float:
    """Drop the datastore's HNSW index and build it again the way the service does; seconds.

    ``graph``: (m, ef_construction) instead of the service's defaults.
    """
    settings = Settings()
    m, ef_construction = graph or (settings.hnsw_m, settings.hnsw_ef_construction)
    hnsw = HnswParams(m, ef_construction, settings.hnsw_ef_search)
    with psycopg.connect(url) as conn:
        partitions.drop_index(conn, UUID(datastore_id))
        start = time.perf_counter()
        partitions.create_index(
            conn,
            UUID(datastore_id),
            Metric.COSINE,
            common.DIMS,
            hnsw,
            precision=settings.default_vector_precision,  # what create_datastore got
            resources=resources,
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
    options: Options,
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
    row.update(_builds(url, ds, size, compare_memory=size == options.compare_memory_at))
    save(row)
    truth = exact_top_k(queries[:200], base, size, seed, common.K)
    row.update(_queries(client, ds, url, queries, truth, size, options.ef_sweep))
    with psycopg.connect(url) as conn:
        row.update(common.relation_sizes_mb(conn, ds))
        row["shared_buffers"] = str(conn.execute("SHOW shared_buffers").fetchone()[0])  # type: ignore[index]
    row.update(common.postgres_memory_mb(data_dir))
    row["service_rss_mb"] = common.service_rss_mb(service_pid)
    save(row)
    if options.shared_buffers_mb:
        row["with_shared_buffers"] = _with_shared_buffers(
            client, data_dir, ds, queries, truth, options
        )
        save(row)
    if not options.top_up:
        return row
    top_up = min(max(size // 10, 1000), 10_000)
    row["ingest_incremental_chunks"] = top_up
    row["ingest_incremental_chunks_per_s"] = common.ingest_rate(
        client, ds, synthetic(base, size, top_up, seed), size
    )
    print(f"  incremental: {row['ingest_incremental_chunks_per_s']:.0f} chunks/s", flush=True)
    save(row)
    if options.rebuilds:  # on the first ``size`` chunks' truth: the top-up is not in it
        truth = exact_top_k(queries[:200], base, size + top_up, seed, common.K)
    for m, ef_construction in options.rebuilds:
        row.setdefault("rebuilds", {})[f"m{m}_efc{ef_construction}"] = _rebuilt(
            client, url, ds, size + top_up, (m, ef_construction), queries, truth, options
        )
        save(row)
    return row


def _rebuilt(
    client: Client,
    url: str,
    ds: str,
    total: int,
    graph: tuple[int, int],
    queries: Matrix,
    truth: list[list[int]],
    options: Options,
) -> dict[str, Any]:
    """The index rebuilt with ``graph`` = (m, ef_construction): build time, size, ef sweep."""
    settings = Settings()
    resources = partitions.BuildResources(
        build_memory_mb(total) * graph[0] // settings.hnsw_m,
        settings.index_build_parallel_workers,
        settings.index_build_timeout_s,
    )
    out: dict[str, Any] = {"chunks": total, "m": graph[0], "ef_construction": graph[1]}
    out["build_s"] = _build(url, ds, resources, graph)
    with psycopg.connect(url) as conn:
        out["hnsw_index_mb"] = common.relation_sizes_mb(conn, ds)["hnsw_index_mb"]
    print(f"  rebuilt m={graph[0]} ef_construction={graph[1]}: {out['build_s']:.1f} s", flush=True)
    out["ef_search_sweep"] = _sweep(client, ds, url, queries, truth, options.ef_sweep)
    return out


def _with_shared_buffers(
    client: Client,
    data_dir: Path,
    ds: str,
    queries: Matrix,
    truth: list[list[int]],
    options: Options,
) -> dict[str, Any]:
    """The sweep again after raising shared_buffers (a restart: the service's supervisor
    starts the embedded server again), once to warm the buffers, once measured."""
    url = common.pg_url(data_dir)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{int(options.shared_buffers_mb or 0)}MB'")
    postmaster = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGINT)  # a fast shutdown, as pg_ctl stop -m fast sends
    deadline = time.monotonic() + 180
    while True:  # the supervisor restarts it; then the service's pool reconnects
        try:
            with psycopg.connect(url) as conn:
                setting = str(conn.execute("SHOW shared_buffers").fetchone()[0])  # type: ignore[index]
            client.retrieval.Query(
                common.vector_query(pb.DatastoreIds(ids=[ds]), queries[0]), timeout=30
            )
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    print(f"  restarted with shared_buffers {setting}", flush=True)
    _sweep(client, ds, url, queries, truth, [max(options.ef_sweep)])  # warm the buffers
    sweep = _sweep(client, ds, url, queries, truth, options.ef_sweep)
    return {"shared_buffers": setting, "ef_search_sweep": sweep}


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
    client: Client,
    ds: str,
    url: str,
    queries: Matrix,
    truth: list[list[int]],
    total: int,
    ef_sweep: Sequence[int],
) -> dict[str, Any]:
    target = pb.DatastoreIds(ids=[ds])
    one = [common.vector_query(target, q) for q in queries[:200]]
    eight = [common.vector_query(target, q) for q in queries[:400]]
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
    out["ef_search_sweep"] = _sweep(client, ds, url, queries, truth, ef_sweep)
    return out


def _index_blocks(url: str, ds: str) -> tuple[int, int]:
    """The HNSW index's blocks found in shared_buffers and read into them (from the OS)."""
    time.sleep(11)  # an idle backend flushes its statistics within 10 s (PGSTAT_IDLE_INTERVAL)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT idx_blks_hit, idx_blks_read FROM pg_statio_user_indexes"
            " WHERE indexrelname = %s",
            (partitions.index_name(UUID(ds)),),
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _sweep(
    client: Client,
    ds: str,
    url: str,
    queries: Matrix,
    truth: list[list[int]],
    ef_sweep: Sequence[int],
) -> dict[str, Any]:
    """Concurrency 1, the first 200 queries, at each ef_search; then back to the default.

    With each: the index blocks per query found in shared_buffers (hit) and read into them.
    """
    target = pb.DatastoreIds(ids=[ds])
    one = [common.vector_query(target, q) for q in queries[:200]]
    sweep = {}
    hit_after, read_after = _index_blocks(url, ds)
    for ef in ef_sweep:
        common.set_ef_search(client, ds, ef)
        hit, read = hit_after, read_after
        stats, found = common.timed_queries(client, one, 1)
        hit_after, read_after = _index_blocks(url, ds)
        sweep[str(ef)] = {
            **stats,
            "recall_at_10": recall_at_k(found, truth, common.K),
            "index_blocks_hit_per_query": (hit_after - hit) / (len(one) + 5),
            "index_blocks_read_per_query": (read_after - read) / (len(one) + 5),
        }
        print(f"  ef_search {ef}: {sweep[str(ef)]}", flush=True)
    common.set_ef_search(client, ds, Settings().hnsw_ef_search)
    return sweep
