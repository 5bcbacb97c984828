"""Ingest throughput: the CLI through StreamIngest vs the model's raw embedding rate.

In one run on one machine:

1. chunk the corpus as the server will (its tokenizer, its default chunk size
   and overlap) and time the model alone on those chunks: sentence-transformers
   ``encode`` at the server's batch size, and the server's own embedding backend
   when that is not sentence-transformers;
2. start the service (``python -m service serve``, embedded PostgreSQL, fresh
   data directory) and time the ``ingest`` CLI on the corpus, end to end
   (process start to exit), then check the datastore's document and chunk counts;
3. time the same command again: every document comes back UNCHANGED;
4. stream many small documents as fast as a client can and sample the server's
   resident memory (RSS) throughout.

Usage::

    .venv/bin/python -m benchmarks.ingest_throughput [--corpus PATH] --out OUT_DIR

Writes OUT_DIR/results.json (raw_embed_docs_per_s, ingest_docs_per_s, ratio,
rerun_speedup, summary, and the details) and OUT_DIR/summary.txt.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._harness import REPO, SCIFACT, cpu_seconds, read_jsonl, rss_bytes
from devtools.serve_process import ServeProcess
from service.client import Client, connect, pb
from service.core.chunking import chunk_text
from service.embedding.registry import bundled_model_path
from service.settings import BUNDLED_MODEL, Settings

DEFAULT_CORPUS = SCIFACT / "corpus.jsonl"
MB = 1024 * 1024


def chunk_corpus(docs: list[dict[str, Any]], settings: Settings, tokenizer: Any) -> list[str]:
    """Every chunk the server will embed, cut by the same tokenizer and settings."""
    chunks: list[str] = []
    for doc in docs:
        text = doc["text"]
        offsets = tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        spans = [(int(a), int(b)) for a, b in offsets["offset_mapping"]]
        windows = chunk_text(
            text,
            spans,
            chunk_size=settings.default_chunk_size,
            overlap=settings.default_chunk_overlap,
        )
        chunks.extend(w.content for w in windows)
    return chunks


def raw_sentence_transformers(chunks: list[str], batch_size: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds for sentence-transformers ``encode`` on ``chunks``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundled_model_path()), device="cpu", local_files_only=True)
    model.encode(chunks[:batch_size], batch_size=batch_size)  # warm up
    start, cpu = time.perf_counter(), time.process_time()
    model.encode(chunks, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    del model
    gc.collect()
    return seconds, cpu


def raw_backend(chunks: list[str], settings: Settings) -> tuple[str, float, float] | None:
    """(backend, wall, CPU seconds) for the server's own embedder on ``chunks``, unless torch."""
    backend = str(getattr(settings, "embedding_backend", "torch"))
    if backend == "torch":
        return None
    from service.embedding.registry import ModelRegistry

    cache_dir = getattr(settings, "model_dir", None) or settings.data_dir / "models"
    registry = ModelRegistry(
        backend=backend,
        cache_dir=cache_dir,
        batch_size=settings.embed_batch_size,
        threads=int(getattr(settings, "embedding_threads", 0)),
    )
    model = registry.get(BUNDLED_MODEL)
    model.embed(chunks[: settings.embed_batch_size])  # warm up
    start, cpu = time.perf_counter(), time.process_time()
    model.embed(chunks)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    del model, registry
    gc.collect()
    return backend, seconds, cpu


def postgres_cpu_seconds(pgdata: Path) -> float:
    """CPU of the embedded PostgreSQL: the postmaster, its live and its exited backends."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == postmaster:
                total += cpu_seconds(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return total


def server_cpu_seconds(server: ServeProcess) -> float:
    """CPU used so far by the service process and its embedded database."""
    return cpu_seconds(server.pid) + postgres_cpu_seconds(server.data_dir / "pgdata")


class RssSampler:
    """Samples a process's RSS every ``interval_s`` on a thread; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self._pid = pid
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.samples: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_bytes(self._pid))
            self._stop.wait(self._interval_s)

    @property
    def peak_mb(self) -> float:
        return max(self.samples) / MB


def run_cli(
    server: ServeProcess, corpus: Path, out: Path, name: str
) -> tuple[float, float, dict[str, Any]]:
    """Wall-clock and CPU seconds (CLI + server + database) of one ``python -m ingest`` run,
    and its summary."""
    summary = out / f"{name}.json"
    args = [sys.executable, "-m", "ingest", str(corpus), "--datastore", "bench-ingest"]
    args += ["--create", "--target", server.target, "--key-file"]
    args += [str(server.data_dir / "api-key"), "--progress", "never", "--summary-json"]
    args += [str(summary), "--failed-file", str(out / f"{name}-failed.tsv")]
    cpu_before = server_cpu_seconds(server) + _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    cpu = server_cpu_seconds(server) + _children_cpu() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"ingest exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return seconds, cpu, json.loads(summary.read_text())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def small_documents(ds_id: str, n: int) -> Iterator[pb.StreamIngestRequest]:
    for i in range(n):
        document = pb.DocumentInput(
            external_id=f"m{i}", text=f"Memory check document {i}, about topic {i % 97}."
        )
        yield pb.StreamIngestRequest(datastore_id=ds_id, document=document)


def memory_check(server: ServeProcess, client: Client, n: int) -> dict[str, Any]:
    """Stream ``n`` small documents as fast as the client can; the server's RSS throughout."""
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="bench-memory"))
    before = rss_bytes(server.pid) / MB
    statuses: dict[int, int] = {}
    quarter_peaks: list[float] = []
    with RssSampler(server.pid) as sampler:
        start = time.perf_counter()
        for i, result in enumerate(client.ingest.StreamIngest(small_documents(ds.id, n)), 1):
            statuses[result.status] = statuses.get(result.status, 0) + 1
            if i % (n // 4) == 0:
                quarter_peaks.append(round(max(sampler.samples, default=0) / MB, 1))
        seconds = time.perf_counter() - start
    stored = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds.id))
    return {
        "documents": n,
        "created": statuses.get(pb.CREATED, 0),
        "stored_documents": stored.document_count,
        "stored_chunks": stored.chunk_count,
        "seconds": round(seconds, 2),
        "docs_per_s": round(n / seconds, 1),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(sampler.peak_mb, 1),
        "peak_rss_mb_after_each_quarter": quarter_peaks,
        "rss_after_mb": round(rss_bytes(server.pid) / MB, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--memory-docs", type=int, default=50_000, help="0 skips the check")
    parser.add_argument(
        "--skip-backend-raw",
        action="store_true",
        help="do not also time the server's own embedding backend alone",
    )
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "server-data"
    if data_dir.exists():
        raise SystemExit(f"{data_dir} exists: use a fresh --out")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = Settings(data_dir=data_dir)  # what the server will read from the same env
    load_before = os.getloadavg()

    docs = read_jsonl(args.corpus)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()), local_files_only=True)
    chunks = chunk_corpus(docs, settings, tokenizer)
    print(f"{len(docs)} documents, {len(chunks)} chunks", flush=True)

    st_seconds, st_cpu = raw_sentence_transformers(chunks, settings.embed_batch_size)
    raw = len(docs) / st_seconds
    print(f"raw sentence-transformers encode: {st_seconds:.1f} s, {raw:.1f} docs/s", flush=True)
    backend = None if args.skip_backend_raw else raw_backend(chunks, settings)
    if backend is not None:
        print(f"raw {backend[0]} backend: {backend[1]:.1f} s", flush=True)

    # the server reads the same settings (a first start may export the ONNX model: 10 min)
    log = out / "server.log"
    with ServeProcess(data_dir, log=log, settings=settings, ready_timeout_s=600) as server:
        client = connect(server.target, server.key)
        with RssSampler(server.pid) as ingest_rss:
            first_s, first_cpu, first = run_cli(server, args.corpus, out, "run1")
        print(f"ingest run 1: {first_s:.1f} s {first}", flush=True)
        stored = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=first["datastore_id"]))
        second_s, second_cpu, second = run_cli(server, args.corpus, out, "run2")
        print(f"ingest run 2: {second_s:.1f} s {second}", flush=True)
        memory = memory_check(server, client, args.memory_docs) if args.memory_docs else None
        client.close()

    ingest = len(docs) / first_s
    results: dict[str, Any] = {
        "raw_embed_docs_per_s": round(raw, 2),
        "ingest_docs_per_s": round(ingest, 2),
        "ratio": round(ingest / raw, 3),
        "rerun_speedup": round(first_s / second_s, 1),
        "corpus": str(args.corpus),
        "documents": len(docs),
        "chunks": len(chunks),
        "batch_size": settings.embed_batch_size,
        "chunk_size": settings.default_chunk_size,
        "chunk_overlap": settings.default_chunk_overlap,
        "raw_embed_seconds": round(st_seconds, 2),
        "raw_embed_chunks_per_s": round(len(chunks) / st_seconds, 2),
        "raw_embed_cpu_seconds": round(st_cpu, 2),
        "ingest_seconds": round(first_s, 2),
        "ingest_cpu_seconds": round(first_cpu, 2),
        "cpu_ratio": round(st_cpu / first_cpu, 3),
        "ingest_summary": first,
        "rerun_seconds": round(second_s, 2),
        "rerun_cpu_seconds": round(second_cpu, 2),
        "rerun_summary": second,
        "stored_documents": stored.document_count,
        "stored_chunks": stored.chunk_count,
        "counts_match": stored.document_count == len(docs) and stored.chunk_count == len(chunks),
        "ingest_peak_rss_mb": round(ingest_rss.peak_mb, 1),
        "memory_check": memory,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    if backend is not None:
        name, seconds, cpu = backend
        results["server_embedding_backend"] = name
        results["raw_backend_docs_per_s"] = round(len(docs) / seconds, 2)
        results["raw_backend_cpu_seconds"] = round(cpu, 2)
        results["ratio_vs_backend"] = round(ingest * seconds / len(docs), 3)
        results["cpu_ratio_vs_backend"] = round(cpu / first_cpu, 3)
    parts = [
        f"{len(docs)} docs / {len(chunks)} chunks: raw embedding {raw:.1f} docs/s "
        f"(sentence-transformers encode, batch {settings.embed_batch_size})",
        f"ingest via the CLI {ingest:.1f} docs/s (ratio {ingest / raw:.2f}; "
        f"CPU-time ratio {results['cpu_ratio']:.2f})",
    ]
    if backend is not None:
        parts.append(
            f"{backend[0]} backend raw {results['raw_backend_docs_per_s']:.1f} docs/s "
            f"(ratio {results['ratio_vs_backend']:.2f})"
        )
    parts.append(f"rerun {second_s:.1f} s ({first_s / second_s:.0f}x faster)")
    if memory is not None:
        parts.append(
            f"{memory['documents']} small docs streamed, server peak RSS {memory['peak_rss_mb']} MB"
        )
    summary = "; ".join(parts)
    results["summary"] = summary
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    print(summary)
    return 0 if results["counts_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
