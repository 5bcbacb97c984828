"""Query latency of two (or more) checkouts side by side, interleaved on one machine.

Each side is a checkout of this repository (``NAME=PATH``), run as its own ``serve``
process with its own embedded PostgreSQL; ``NAME=PATH@OTHER`` runs PATH's code on
OTHER's database (same schema), so both read the very same data. Queries go to the
sides in alternating blocks (100 at concurrency 1, 25 x concurrency above), the order
rotating each round, so load on the machine meets every side alike. Blocks, not single
queries: a side's onnxruntime threads spin for a moment after each run and would slow
the other side's next query.

    .venv/bin/python -m benchmarks.latency_ab --data /tmp/ab \\
        --side before=../before after=.  --out bench-out/latency-ab

The first run ingests the first ``--limit`` SciFact documents into each side (kept in
``--data`` for later runs); the query cache is off, so every query embeds.
``--request vector`` or ``invalid`` sends the same path without the model, or only its
fixed per-call cost (see ``REQUESTS``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import grpc

from benchmarks._harness import (
    SCIFACT,
    cpu_seconds,
    free_port,
    load_corpus,
    load_queries,
    percentile,
)
from service.client import Client, connect, pb, wait_until_serving


class Side(NamedTuple):
    name: str
    proc: subprocess.Popen[bytes]
    client: Client
    datastore_id: str


def _start(name: str, spec: str, data: Path, out: Path, limit: int) -> Side:
    repo, _, shared = spec.partition("@")
    side_dir = data / name
    side_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRIEVAL_")}
    env.update(
        RETRIEVAL_QUERY_CACHE_SIZE="0",
        RETRIEVAL_HTTP_PORT="0",
        RETRIEVAL_MAX_CALLS_PER_PRINCIPAL="64",
    )
    owner = data / (shared or name)
    if shared:
        host = owner.resolve() / "pgdata"
        env["RETRIEVAL_DATABASE_URL"] = f"postgresql://postgres:@/postgres?host={host}"
    port = free_port()
    python = Path(repo).resolve() / ".venv" / "bin" / "python"
    proc = subprocess.Popen(
        [str(python), "-m", "service", "serve", "--data-dir", str(side_dir), "--port", str(port)],
        cwd=repo,
        stdout=(out / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    target = f"127.0.0.1:{port}"
    wait_until_serving(target)
    client = connect(target, (owner / "api-key").read_text().strip())
    if not shared:
        _ingest(side_dir, client, limit)
    return Side(name, proc, client, (owner / "datastore-id").read_text().strip())


def _ingest(target_dir: Path, client: Client, limit: int) -> None:
    if (target_dir / "datastore-id").exists():
        return
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="latency-ab"))
    docs = [
        pb.DocumentInput(
            external_id=d["_id"],
            title=d.get("title", ""),
            text=f"{d.get('title', '')} {d['text']}".strip(),
        )
        for d in load_corpus(SCIFACT)[:limit]
    ]
    for i in range(0, len(docs), 64):
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(datastore_id=ds.id, documents=docs[i : i + 64])
        )
    (target_dir / "datastore-id").write_text(ds.id)


# What each query sends (--request): the query text (the real path); a fixed vector of
# the bundled model's 384 dimensions (the same path without embedding); or an empty text,
# refused with INVALID_ARGUMENT once the caller is authenticated (the fixed per-call cost:
# transport, authentication, limits, observability, no model, no SQL).
REQUESTS = ("text", "vector", "invalid")
_VECTOR = pb.QueryVector(values=[1.0 / 384**0.5] * 384)


def _query(side: Side, text: str, request: str = "text") -> float:
    ids = pb.DatastoreIds(ids=[side.datastore_id])
    if request == "vector":
        message = pb.QueryRequest(datastores=ids, vector=_VECTOR)
    else:
        message = pb.QueryRequest(datastores=ids, text="" if request == "invalid" else text)
    start = time.perf_counter()
    try:
        side.client.retrieval.Query(message)
    except grpc.RpcError as e:
        if request != "invalid" or e.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise
    return (time.perf_counter() - start) * 1000


def _level(
    sides: list[Side], queries: list[str], concurrency: int, rounds: int, request: str
) -> dict[str, dict[str, float]]:
    block = 100 if concurrency == 1 else 25 * concurrency
    latencies: dict[str, list[float]] = {s.name: [] for s in sides}
    wall = dict.fromkeys(latencies, 0.0)
    cpu = dict.fromkeys(latencies, 0.0)
    for first in range(0, rounds, block):
        turn = (first // block) % len(sides)
        for side in sides[turn:] + sides[:turn]:
            texts = [queries[i % len(queries)] for i in range(first, first + block)]
            cpu_before, start = cpu_seconds(side.proc.pid), time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                latencies[side.name] += pool.map(lambda t, s=side: _query(s, t, request), texts)
            wall[side.name] += time.perf_counter() - start
            cpu[side.name] += cpu_seconds(side.proc.pid) - cpu_before
    return {
        name: {
            "p50_ms": statistics.median(values),
            "p90_ms": percentile(values, 90),
            "qps": len(values) / wall[name],
            "server_cpu_ms_per_query": 1000 * cpu[name] / len(values),
        }
        for name, values in latencies.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", nargs="+", required=True, help="NAME=PATH or NAME=PATH@OTHER")
    parser.add_argument("--data", type=Path, required=True, help="the sides' data, kept")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json")
    parser.add_argument("--limit", type=int, default=1000, help="SciFact documents to ingest")
    parser.add_argument("--rounds", type=int, default=1200, help="queries per side and level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--request", choices=REQUESTS, default="text", help="what a query sends")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    specs = [s.split("=", 1) for s in args.side]
    owners = [(n, p) for n, p in specs if "@" not in p]
    sides: list[Side] = []
    try:
        for name, spec in owners + [(n, p) for n, p in specs if "@" in p]:
            sides.append(_start(name, spec, args.data, args.out, args.limit))
        queries = load_queries(SCIFACT)
        for side in sides:  # warm: models, caches, pooled connections
            for text in queries[:20]:
                _query(side, text)
        levels = {
            str(c): _level(sides, queries, c, args.rounds, args.request) for c in args.concurrency
        }
    finally:
        for side in sides:
            side.client.close()
            side.proc.terminate()
        for side in sides:
            side.proc.wait(timeout=60)
    results = {"sides": dict(specs), "request": args.request, "concurrency": levels}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
