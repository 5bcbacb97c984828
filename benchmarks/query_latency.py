"""Query latency and throughput of the service next to the machine's floors.

One run, same data (SciFact corpus in a datastore, its 300 test queries):
(a) floors: query embedding alone, the search SQL alone (psycopg, precomputed
vectors), a trivial gRPC unary call (health check), and, for comparison, gRPC's
cost around a bare server's handler that computes as long as the service does;
(b) the service over gRPC at concurrency 1, 4, 16, 64: p50, p99, QPS; and the
same queries at concurrency 1 over the HTTP port (Connect JSON, Connect binary,
gRPC-Web) beside native gRPC;
(c) ratios service / floor. The QPS floor is the better of batched runs on every
core and one single-thread run per core side by side; a CPU-cost ceiling (cores /
the floors' CPU time per query) shows what is left once PostgreSQL and gRPC take
their share of the same cores.

    .venv/bin/python -m benchmarks.query_latency --out OUT_DIR

The server runs as a separate `serve` process (query-embedding cache off, so
every request embeds); floors are measured in this process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks._harness import (
    SCIFACT,
    free_port,
    load_corpus,
    load_queries,
    percentile,
    serve_process,
    timed_ms,
)
from benchmarks.latency_floors import (
    CpuMeter,
    embedding_floor,
    grpc_floor,
    grpc_held_floor,
    sql_floors,
)
from service.api.http.client import HttpClient, Protocol
from service.client import Client, connect, pb
from service.embedding.registry import ModelRegistry
from service.embedding.worker import available_cores
from service.settings import BUNDLED_MODEL, Settings

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


def http_latency(
    base_url: str, key: str, datastore_id: str, queries: list[str]
) -> dict[str, dict[str, float]]:
    """Query p50/p99 at concurrency 1 over each HTTP wire (one pass over the queries each)."""
    target = pb.DatastoreIds(ids=[datastore_id])
    rows = {}
    wires: list[tuple[str, Protocol, bool]] = [
        ("connect_json", "connect", False),
        ("connect_binary", "connect", True),
        ("grpc_web", "grpc-web", True),
    ]
    for name, protocol, binary in wires:
        client = HttpClient(base_url, key, protocol=protocol, binary=binary)
        for q in queries[:10]:
            client.call("RetrievalService", "Query", pb.QueryRequest(datastores=target, text=q))
        latencies = [
            timed_ms(
                client.call,
                "RetrievalService",
                "Query",
                pb.QueryRequest(datastores=target, text=q),
            )
            for q in queries
        ]
        client.close()
        rows[name] = {"p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 99)}
    return rows


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
        http_port = free_port()
        # One key drives up to 64 concurrent calls here: lift the per-caller limit.
        with serve_process(
            data_dir,
            args.out / "serve.log",
            query_cache_size="0",
            onnx_cache_dir=cache,
            http_port=str(http_port),
            max_calls_per_principal="64",
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
            http = http_latency(f"http://127.0.0.1:{http_port}", key, datastore_id, queries)
            print(f"over HTTP at concurrency 1: {json.dumps(http)}", flush=True)

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
        # the same queries at c=1 over the HTTP port, beside native gRPC's levels["1"]
        "http_c1": http,
        "documents": len(corpus),
        "queries": len(queries),
        "ingest_s": ingest_s,
    }
    results["summary"] = (
        f"p50 at c=1 {results['p50_ms_c1']:.2f} ms vs floor {floor_p50:.2f} ms "
        f"(x{results['ratio_p50']:.2f}; x{results['ratio_p50_held']:.2f} against the floor "
        f"with gRPC around a busy handler, {held_floor_p50:.2f} ms); best {qps_best:.0f} QPS "
        f"vs embedding floor {floor_qps:.0f} QPS (x{results['ratio_qps']:.2f}) and vs the "
        f"CPU-cost ceiling {cpu_ceiling_qps:.0f} QPS (x{results['ratio_qps_cpu_ceiling']:.2f}); "
        f"p50 at c=1 over Connect JSON {http['connect_json']['p50_ms']:.2f} ms, Connect binary "
        f"{http['connect_binary']['p50_ms']:.2f} ms, gRPC-Web {http['grpc_web']['p50_ms']:.2f} ms"
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(results["summary"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
