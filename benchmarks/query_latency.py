"""Query latency and throughput of the service next to the machine's floors.

One run, same data (SciFact corpus in a datastore, its 300 test queries):
(a) floors: query embedding alone, the search SQL alone (psycopg, precomputed
vectors), a trivial gRPC unary call (health check), and, for comparison, gRPC's
cost around a bare server's handler that computes as long as the service does;
(b) the service over gRPC at concurrency 1, 4, 16, 64: p50, p99, QPS;
(c) ratios service / floor. The QPS floor is the better of batched runs on every
core and one single-thread run per core side by side; a CPU-cost ceiling (cores /
the floors' CPU time per query) shows what is left once PostgreSQL and gRPC take
their share of the same cores.

    .venv/bin/python benchmarks/query_latency.py --out OUT_DIR

The server runs as a separate `serve` process (query-embedding cache off, so
every request embeds); floors are measured in this process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing import Queue
from pathlib import Path
from uuid import UUID

import grpc
import numpy as np
import psutil
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pgvector.psycopg import register_vector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    SCIFACT,
    load_corpus,
    load_queries,
    percentile,
    serve_process,
    timed_ms,
)
from service.client import Client, connect, pb
from service.embedding.base import Embedder
from service.embedding.registry import ModelRegistry
from service.embedding.worker import available_cores
from service.settings import BUNDLED_MODEL, Settings
from service.storage import datastores as datastore_rows
from service.storage import search

CONCURRENCY = (1, 4, 16, 64)


def ingest(client: Client, corpus: list[dict[str, str]]) -> tuple[str, float]:
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="scifact-latency"))
    start = time.perf_counter()
    docs = [
        pb.DocumentInput(
            external_id=d["_id"],
            title=d.get("title", ""),
            text=f"{d.get('title', '')} {d['text']}".strip(),
        )
        for d in corpus
    ]
    for i in range(0, len(docs), 64):
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(datastore_id=ds.id, documents=docs[i : i + 64])
        )
        print(f"\ringested {min(i + 64, len(docs))}/{len(docs)}", end="", flush=True)
    print()
    return ds.id, time.perf_counter() - start


def side_by_side(model: Embedder, queries: list[str], lanes: int) -> None:
    """Embed every query once, one per single-thread run, ``lanes`` runs at a time."""
    work = iter(queries)
    lock = threading.Lock()

    def lane() -> None:
        while True:
            with lock:
                q = next(work, None)
            if q is None:
                return
            model.embed([q], single_thread=True)

    threads = [threading.Thread(target=lane) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def embedding_floor(queries: list[str], settings: Settings, cores: int) -> dict[str, float]:
    """The embedding model alone, in this process, two ways of using the machine.

    ``embed_batch_qps``: one run at a time on every core, best of several batch
    sizes (what dynamic batching could reach). ``embed_parallel_qps``: one
    single-thread run per core side by side, one query each (what the service's
    lanes do). ``embed_cpu_ms`` is CPU time per query in the parallel runs.
    """
    models = ModelRegistry(
        backend=settings.embedding_backend,
        cache_dir=settings.model_dir,
        batch_size=settings.embed_batch_size,
        threads=settings.embedding_threads,
    )
    model = models.get(BUNDLED_MODEL)
    for q in queries[:20]:
        model.embed([q])
        model.embed([q], single_thread=True)
    single = [timed_ms(model.embed, [q]) for q in queries]
    batch_rates = {}
    for size in (1, 8, 32, 64):
        start = time.perf_counter()
        for i in range(0, len(queries), size):
            model.embed(queries[i : i + size])
        batch_rates[size] = len(queries) / (time.perf_counter() - start)
    parallel_rates, cpu_ms = [], []
    for _ in range(3):
        cpu_start, start = time.process_time(), time.perf_counter()
        side_by_side(model, queries, cores)
        parallel_rates.append(len(queries) / (time.perf_counter() - start))
        cpu_ms.append((time.process_time() - cpu_start) * 1000 / len(queries))
    best_size = max(batch_rates, key=lambda k: batch_rates[k])
    return {
        "embed_p50_ms": statistics.median(single),
        "embed_batch_qps": batch_rates[best_size],
        "embed_batch_qps_by_size": batch_rates,  # type: ignore[dict-item]
        "embed_parallel_qps": max(parallel_rates),
        "embed_cpu_ms": statistics.median(cpu_ms),
        "backend": settings.embedding_backend,  # type: ignore[dict-item]
    }


class CpuMeter:
    """CPU seconds spent by the serve process, PostgreSQL and this (client) process."""

    def __init__(self, server_pid: int) -> None:
        self._server = psutil.Process(server_pid)
        self._client = psutil.Process()

    def read(self) -> dict[str, float]:
        postgres = 0.0
        for p in psutil.process_iter(["name", "cpu_times"]):
            if p.info["name"] == "postgres" and p.info["cpu_times"] is not None:
                postgres += p.info["cpu_times"].user + p.info["cpu_times"].system
        machine = psutil.cpu_times()
        return {
            "server": sum(self._server.cpu_times()[:2]),
            "postgres": postgres,
            "client": sum(self._client.cpu_times()[:2]),
            "busy": machine.user + machine.system + machine.nice,
        }

    def cpu_ms(self, before: dict[str, float], parts: tuple[str, ...], n: int) -> float:
        """CPU ms per operation spent by ``parts`` since ``before``, over ``n`` operations."""
        after = self.read()
        return sum(after[p] - before[p] for p in parts) * 1000 / n

    @contextmanager
    def share(self, out: dict[str, float]) -> Iterator[None]:
        """Fill ``out`` with each part's share of the machine's CPU capacity meanwhile."""
        before, start = self.read(), time.perf_counter()
        yield
        after, wall = self.read(), time.perf_counter() - start
        capacity = wall * (psutil.cpu_count() or 1)
        used = {k: after[k] - before[k] for k in after}
        for part in ("server", "postgres", "client"):
            out[f"cpu_{part}"] = used[part] / capacity
        out["cpu_other"] = (
            max(used["busy"] - sum(used[p] for p in ("server", "postgres", "client")), 0) / capacity
        )
        out["cpu_idle"] = max(1 - used["busy"] / capacity, 0)


def sql_floors(
    uri: str, datastore_id: str, vectors: np.ndarray, meter: CpuMeter
) -> dict[str, float]:
    """Median ms of the search statement alone, and of the service's whole database path.

    The floor (``sql_p50_ms``) is the service's own search statement (same rows, same
    columns) on an autocommit connection with ``hnsw.ef_search`` set once for the
    session: one round trip, nothing else. ``sql_path_p50_ms`` is what a single-datastore
    vector query runs on its autocommit connection, ``search_alone`` (the pool's lending
    and return, about 0.3 ms, are not in it).
    ``sql_cpu_ms``: PostgreSQL's and this process's CPU time per bare statement.
    """
    with (
        psycopg.connect(uri, autocommit=True) as conn,
        psycopg.connect(uri, autocommit=True) as pooled,
    ):
        register_vector(conn)
        register_vector(pooled)
        datastore = datastore_rows.get(conn, UUID(datastore_id))
        assert datastore is not None
        k, threshold = datastore.max_results, datastore.similarity_threshold
        conn.execute(f"SET hnsw.ef_search = {datastore.config.hnsw.ef_search}")

        def bare(v: np.ndarray) -> None:
            query, params = search.build_query(datastore, v, k, threshold)
            conn.execute(query, params).fetchall()

        def path(v: np.ndarray) -> None:  # as a pooled connection in the service
            search.search_alone(pooled, datastore, v, k=k, threshold=threshold)

        out = {}
        for name, run in (("sql_p50_ms", bare), ("sql_path_p50_ms", path)):
            for v in vectors[:20]:
                run(v)
            before = meter.read()
            out[name] = statistics.median(timed_ms(run, v) for v in vectors)
            if run is bare:
                out["sql_cpu_ms"] = meter.cpu_ms(before, ("postgres", "client"), len(vectors))
        return out


def grpc_floor(target: str, meter: CpuMeter, n: int = 300) -> dict[str, float]:
    """A trivial unary call (health check): median ms, and server + client CPU per call."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        for _ in range(20):
            stub.Check(request)
        before = meter.read()
        p50 = statistics.median(timed_ms(stub.Check, request) for _ in range(n))
        return {"grpc_p50_ms": p50, "grpc_cpu_ms": meter.cpu_ms(before, ("server", "client"), n)}


def _held_server(ports: Queue[int], hold_ms: float, reply_bytes: int) -> None:
    """A bare grpcio server (no service code) whose one method computes for ``hold_ms``."""

    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        end = time.perf_counter() + hold_ms / 1000
        while time.perf_counter() < end:  # busy, like the model, not asleep
            pass
        return b"x" * reply_bytes

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "bench.Held", {"Call": grpc.unary_unary_rpc_method_handler(call)}
            )
        ]
    )
    ports.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


def grpc_held_floor(hold_ms: float, reply_bytes: int, n: int = 300) -> dict[str, float]:
    """gRPC's own cost around a handler that works as long as the service's does.

    The trivial-call floor is measured back to back, with every thread awake. A real
    ``Query`` keeps the server busy for ~10 ms while the client waits, and waking the
    waiting threads afterwards costs more on this kind of machine. Measured here with a
    bare grpcio server in its own process: median (call time - hold time).
    """
    context = multiprocessing.get_context("spawn")
    ports: Queue[int] = context.Queue()
    proc = context.Process(target=_held_server, args=(ports, hold_ms, reply_bytes), daemon=True)
    proc.start()
    try:
        port = ports.get(timeout=120)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/bench.Held/Call")
            request = b"q" * 100
            for _ in range(20):
                call(request)
            costs = [timed_ms(call, request) - hold_ms for _ in range(n)]
    finally:
        proc.terminate()
        proc.join(timeout=30)
    return {"grpc_held_p50_ms": statistics.median(costs), "grpc_held_hold_ms": hold_ms}


def load(
    client: Client,
    datastore_id: str,
    queries: list[str],
    concurrency: int,
    total: int,
    meter: CpuMeter,
) -> dict[str, float]:
    target = pb.DatastoreIds(ids=[datastore_id])
    latencies: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        ms = timed_ms(
            client.retrieval.Query,
            pb.QueryRequest(datastores=target, text=queries[i % len(queries)]),
        )
        with lock:
            latencies.append(ms)

    for q in queries[:10]:
        client.retrieval.Query(pb.QueryRequest(datastores=target, text=q))
    cpu: dict[str, float] = {}
    start = time.perf_counter()
    with meter.share(cpu), ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - start
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 99),
        "qps": total / elapsed,
        **cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json")
    parser.add_argument(
        "--dataset", type=Path, default=SCIFACT, help="BEIR folder (corpus.jsonl, queries.jsonl)"
    )
    parser.add_argument("--limit", type=int, default=0, help="ingest only the first N documents")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(args.dataset)
    corpus = corpus[: args.limit] if args.limit else corpus
    queries = load_queries(args.dataset)

    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        data_dir = Path(tmp) / "data"
        cache = str(Path(__file__).resolve().parent.parent / ".venv" / "model-cache")
        with serve_process(
            data_dir, args.out / "serve.log", query_cache_size="0", onnx_cache_dir=cache
        ) as (target, key, server_pid):
            client = connect(target, key)
            datastore_id, ingest_s = ingest(client, corpus)
            print(f"ingested {len(corpus)} documents in {ingest_s:.1f} s")
            settings = Settings(data_dir=data_dir, onnx_cache_dir=Path(cache))
            cores = available_cores()
            meter = CpuMeter(server_pid)
            floors = embedding_floor(queries, settings, cores)
            models = ModelRegistry(backend=settings.embedding_backend, cache_dir=settings.model_dir)
            vectors = models.get(BUNDLED_MODEL).embed(queries)
            uri = f"postgresql://postgres:@/postgres?host={data_dir.resolve() / 'pgdata'}"
            floors.update(sql_floors(uri, datastore_id, vectors, meter))
            floors.update(grpc_floor(target, meter))
            reply = client.retrieval.Query(
                pb.QueryRequest(datastores=pb.DatastoreIds(ids=[datastore_id]), text=queries[0])
            )
            floors.update(
                grpc_held_floor(floors["embed_p50_ms"] + floors["sql_p50_ms"], reply.ByteSize())
            )
            print("floors:", json.dumps(floors))
            levels = {}
            for c in CONCURRENCY:
                total = max(len(queries), 20 * c)
                levels[c] = load(client, datastore_id, queries, c, total, meter)
                print(f"concurrency {c}: {json.dumps(levels[c])}", flush=True)
            client.close()

    floor_p50 = floors["embed_p50_ms"] + floors["sql_p50_ms"] + floors["grpc_p50_ms"]
    # The same sum with gRPC's cost around a busy handler instead of a back-to-back call.
    held_floor_p50 = floors["embed_p50_ms"] + floors["sql_p50_ms"] + floors["grpc_held_p50_ms"]
    qps_best = max(v["qps"] for v in levels.values())
    # The embedding floor is the better of the two ways to use the machine for it.
    floor_qps = max(floors["embed_batch_qps"], floors["embed_parallel_qps"])
    # What the whole machine could serve if every core did nothing but the three
    # floors' CPU work per query (embedding, SQL, gRPC call), with no overhead at all.
    cpu_per_query_ms = floors["embed_cpu_ms"] + floors["sql_cpu_ms"] + floors["grpc_cpu_ms"]
    cpu_ceiling_qps = cores * 1000 / cpu_per_query_ms
    results = {
        "floor_p50_ms": floor_p50,
        "p50_ms_c1": levels[1]["p50_ms"],
        "ratio_p50": levels[1]["p50_ms"] / floor_p50,
        "held_floor_p50_ms": held_floor_p50,
        "ratio_p50_held": levels[1]["p50_ms"] / held_floor_p50,
        "floor_qps": floor_qps,
        "qps_best": qps_best,
        "ratio_qps": qps_best / floor_qps,
        "cpu_ceiling_qps": cpu_ceiling_qps,
        "ratio_qps_cpu_ceiling": qps_best / cpu_ceiling_qps,
        "cores": cores,
        "floors": floors,
        "concurrency": {str(c): v for c, v in levels.items()},
        "documents": len(corpus),
        "queries": len(queries),
        "ingest_s": ingest_s,
    }
    results["summary"] = (
        f"p50 at c=1 {results['p50_ms_c1']:.2f} ms vs floor {floor_p50:.2f} ms "
        f"(x{results['ratio_p50']:.2f}; x{results['ratio_p50_held']:.2f} against the floor "
        f"with gRPC around a busy handler, {held_floor_p50:.2f} ms); best {qps_best:.0f} QPS "
        f"vs embedding floor {floor_qps:.0f} QPS (x{results['ratio_qps']:.2f}) and vs the "
        f"CPU-cost ceiling {cpu_ceiling_qps:.0f} QPS (x{results['ratio_qps_cpu_ceiling']:.2f})"
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(results["summary"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
