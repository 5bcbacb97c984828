"""Query latency and throughput of the service next to the machine's floors.

One run, same data (SciFact corpus in a datastore, its 300 test queries):
(a) floors: query embedding alone, the search SQL alone (psycopg, precomputed
vectors), a trivial gRPC unary call (health check);
(b) the service over gRPC at concurrency 1, 4, 16, 64: p50, p99, QPS;
(c) ratios service / floor.

    .venv/bin/python benchmarks/query_latency.py --out OUT_DIR

The server runs as a separate `serve` process (query-embedding cache off, so
every request embeds); floors are measured in this process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
from service.embedding.registry import ModelRegistry
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


def embedding_floor(queries: list[str], settings: Settings) -> dict[str, float]:
    models = ModelRegistry(
        backend=settings.embedding_backend,
        cache_dir=settings.model_dir,
        batch_size=settings.embed_batch_size,
    )
    model = models.get(BUNDLED_MODEL)
    for q in queries[:20]:
        model.embed([q])
    single = [timed_ms(model.embed, [q]) for q in queries]
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(0, len(queries), settings.embed_batch_size):
            model.embed(queries[i : i + settings.embed_batch_size])
        rates.append(len(queries) / (time.perf_counter() - start))
    return {
        "embed_p50_ms": statistics.median(single),
        "embed_batch_qps": max(rates),
        "backend": settings.embedding_backend,  # type: ignore[dict-item]
    }


def sql_floors(uri: str, datastore_id: str, vectors: np.ndarray) -> dict[str, float]:
    """Median ms of the search statement alone, and of the service's whole database path.

    The floor (``sql_p50_ms``) is the service's own search statement (same rows, same
    columns) on an autocommit connection with ``hnsw.ef_search`` set once for the
    session: one round trip, nothing else. ``sql_path_p50_ms`` is what a request does:
    a transaction with the settings and the search pipelined, then COMMIT.
    """
    with psycopg.connect(uri, autocommit=True) as conn, psycopg.connect(uri) as pooled:
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
            search.search(pooled, datastore, v, k=k, threshold=threshold, exact=False)
            pooled.commit()

        out = {}
        for name, run in (("sql_p50_ms", bare), ("sql_path_p50_ms", path)):
            for v in vectors[:20]:
                run(v)
            out[name] = statistics.median(timed_ms(run, v) for v in vectors)
        return out


def grpc_floor(target: str, n: int = 300) -> float:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        for _ in range(20):
            stub.Check(request)
        return statistics.median(timed_ms(stub.Check, request) for _ in range(n))


class CpuMeter:
    """CPU seconds spent by the serve process, PostgreSQL and this (client) process."""

    def __init__(self, server_pid: int) -> None:
        self._server = psutil.Process(server_pid)
        self._client = psutil.Process()

    def _read(self) -> dict[str, float]:
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

    @contextmanager
    def share(self, out: dict[str, float]) -> Iterator[None]:
        """Fill ``out`` with each part's share of the machine's CPU capacity meanwhile."""
        before, start = self._read(), time.perf_counter()
        yield
        after, wall = self._read(), time.perf_counter() - start
        capacity = wall * (psutil.cpu_count() or 1)
        used = {k: after[k] - before[k] for k in after}
        for part in ("server", "postgres", "client"):
            out[f"cpu_{part}"] = used[part] / capacity
        out["cpu_other"] = (
            max(used["busy"] - sum(used[p] for p in ("server", "postgres", "client")), 0) / capacity
        )
        out["cpu_idle"] = max(1 - used["busy"] / capacity, 0)


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
            floors = embedding_floor(queries, settings)
            models = ModelRegistry(backend=settings.embedding_backend, cache_dir=settings.model_dir)
            vectors = models.get(BUNDLED_MODEL).embed(queries)
            uri = f"postgresql://postgres:@/postgres?host={data_dir.resolve() / 'pgdata'}"
            floors.update(sql_floors(uri, datastore_id, vectors))
            floors["grpc_p50_ms"] = grpc_floor(target)
            print("floors:", json.dumps(floors))
            levels = {}
            meter = CpuMeter(server_pid)
            for c in CONCURRENCY:
                total = max(len(queries), 20 * c)
                levels[c] = load(client, datastore_id, queries, c, total, meter)
                print(f"concurrency {c}: {json.dumps(levels[c])}", flush=True)
            client.close()

    floor_p50 = floors["embed_p50_ms"] + floors["sql_p50_ms"] + floors["grpc_p50_ms"]
    qps_best = max(v["qps"] for v in levels.values())
    results = {
        "floor_p50_ms": floor_p50,
        "p50_ms_c1": levels[1]["p50_ms"],
        "ratio_p50": levels[1]["p50_ms"] / floor_p50,
        "floor_qps": floors["embed_batch_qps"],
        "qps_best": qps_best,
        "ratio_qps": qps_best / floors["embed_batch_qps"],
        "floors": floors,
        "concurrency": {str(c): v for c, v in levels.items()},
        "documents": len(corpus),
        "queries": len(queries),
        "ingest_s": ingest_s,
    }
    results["summary"] = (
        f"p50 at c=1 {results['p50_ms_c1']:.2f} ms vs floor {floor_p50:.2f} ms "
        f"(x{results['ratio_p50']:.2f}); best {qps_best:.0f} QPS vs embedding batch floor "
        f"{floors['embed_batch_qps']:.0f} QPS (x{results['ratio_qps']:.2f})"
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(results["summary"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
