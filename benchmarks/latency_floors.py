"""The floors `query_latency.py` compares the service with, each measured alone.

Query embedding (batched on every core, or single-thread runs side by side), the
search statement through psycopg, a trivial gRPC call, and gRPC's cost around a
bare server's handler that computes as long as the service does; ``CpuMeter``
reads the CPU time each process spends meanwhile.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing import Queue
from uuid import UUID

import grpc
import numpy as np
import psutil
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pgvector.psycopg import register_vector

from benchmarks._harness import timed_ms
from service.embedding.base import Embedder
from service.embedding.registry import ModelRegistry
from service.settings import BUNDLED_MODEL, Settings
from service.storage import datastores as datastore_rows
from service.storage import vector_search


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
            query, params = vector_search.build_query(datastore, v, k, threshold)
            conn.execute(query, params).fetchall()

        def path(v: np.ndarray) -> None:  # as a pooled connection in the service
            vector_search.search_alone(pooled, datastore, v, k=k, threshold=threshold)

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
