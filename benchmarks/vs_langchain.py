"""Side by side with LangChain: ingest docs/s and query p50 on the same data and PostgreSQL.

LangChain: `langchain-postgres` PGVectorStore (v2 API) in this process, with the same
all-MiniLM-L6-v2 weights through sentence-transformers (what `HuggingFaceEmbeddings`
does) and an HNSW cosine index (`apply_vector_index`). Ours: the service over gRPC
(a separate `serve` process) through StreamIngest, default datastore settings (and,
for an equal-work ingest figure, one caller-made chunk per document, which the model
cuts at its window as sentence-transformers does for LangChain). Both use the same embedded
PostgreSQL server, the SciFact corpus (title + text per document) and its 300 queries,
top-5 results.

    .venv/bin/python -m benchmarks.vs_langchain --out OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from benchmarks._harness import SCIFACT, load_corpus, load_queries, serve_process, timed_ms
from service.client import Client, connect, pb

K = 5
BATCH = 64


def _documents(corpus: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(d["_id"], f"{d.get('title', '')} {d['text']}".strip()) for d in corpus]


def _stream_ingest(client: Client, datastore_id: str, docs: list[pb.DocumentInput]) -> float:
    """StreamIngest (the bulk path the ingest CLI uses); seconds until every result came back."""

    def requests() -> Iterator[pb.StreamIngestRequest]:
        for i, doc in enumerate(docs):
            yield pb.StreamIngestRequest(datastore_id=datastore_id if i == 0 else "", document=doc)

    start = time.perf_counter()
    results = list(client.ingest.StreamIngest(requests()))
    elapsed = time.perf_counter() - start
    failed = [r.external_id for r in results if r.status == pb.FAILED]
    if len(results) != len(docs) or failed:
        raise RuntimeError(f"ingest incomplete: {len(results)} results, failed {failed[:5]}")
    return elapsed


def ours(client: Client, docs: list[tuple[str, str]], queries: list[str]) -> dict[str, float]:
    """The service with a default datastore (every token embedded, in overlapping chunks),
    and once more with LangChain's work: one embedding per document, cut at the model's
    window (the document sent as one caller-made chunk)."""
    ds = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(name="scifact-vs-langchain", max_results=K)
    )
    ingest_s = _stream_ingest(
        client, ds.id, [pb.DocumentInput(external_id=e, text=t) for e, t in docs]
    )
    same = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(name="scifact-one-chunk", max_results=K)
    )
    same_s = _stream_ingest(
        client,
        same.id,
        [pb.DocumentInput(external_id=e, chunks=[pb.ChunkInput(content=t)]) for e, t in docs],
    )
    target = pb.DatastoreIds(ids=[ds.id])
    request = [pb.QueryRequest(datastores=target, text=q, max_results=K) for q in queries]
    for r in request[:10]:
        client.retrieval.Query(r)
    latencies = [timed_ms(client.retrieval.Query, r) for r in request]
    return {
        "ingest_docs_per_s": len(docs) / ingest_s,
        "same_work_ingest_docs_per_s": len(docs) / same_s,
        "p50_ms": statistics.median(latencies),
    }


def langchain(uri: str, docs: list[tuple[str, str]], queries: list[str]) -> dict[str, float]:
    from langchain_core.embeddings import Embeddings
    from langchain_postgres import PGEngine, PGVectorStore
    from langchain_postgres.v2.indexes import HNSWIndex
    from sentence_transformers import SentenceTransformer

    from service.embedding.registry import bundled_model_path

    class MiniLM(Embeddings):
        def __init__(self) -> None:
            self._model = SentenceTransformer(str(bundled_model_path()), device="cpu")

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return self._model.encode(texts, batch_size=32).tolist()  # type: ignore[no-any-return]

        def embed_query(self, text: str) -> list[float]:
            return self._model.encode([text])[0].tolist()  # type: ignore[no-any-return]

    engine = PGEngine.from_connection_string(url=uri)
    engine.init_vectorstore_table("langchain_scifact", 384, overwrite_existing=True)
    store = PGVectorStore.create_sync(engine, MiniLM(), "langchain_scifact", k=K)
    store.apply_vector_index(HNSWIndex())
    start = time.perf_counter()
    for i in range(0, len(docs), BATCH):
        batch: Sequence[tuple[str, str]] = docs[i : i + BATCH]
        store.add_texts([t for _, t in batch], metadatas=[{"external_id": e} for e, _ in batch])
    ingest_s = time.perf_counter() - start
    for q in queries[:10]:
        store.similarity_search(q, k=K)
    latencies = [timed_ms(store.similarity_search, q, K) for q in queries]
    return {"ingest_docs_per_s": len(docs) / ingest_s, "p50_ms": statistics.median(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json")
    parser.add_argument("--dataset", type=Path, default=SCIFACT, help="BEIR folder")
    parser.add_argument("--limit", type=int, default=0, help="only the first N documents")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(args.dataset)
    docs = _documents(corpus[: args.limit] if args.limit else corpus)
    queries = load_queries(args.dataset)

    cache = str(Path(__file__).resolve().parent.parent / ".venv" / "model-cache")
    with tempfile.TemporaryDirectory(prefix="vs-langchain-") as tmp:
        data_dir = Path(tmp) / "data"
        with serve_process(
            data_dir, args.out / "serve.log", query_cache_size="0", onnx_cache_dir=cache
        ) as (target, key, _):
            client = connect(target, key)
            print("ours: ingesting and querying ...", flush=True)
            our = ours(client, docs, queries)
            client.close()
            print("ours:", json.dumps(our), flush=True)
            socket_dir = data_dir.resolve() / "pgdata"
            print("langchain: ingesting and querying ...", flush=True)
            lc = langchain(
                f"postgresql+psycopg://postgres:@/postgres?host={socket_dir}", docs, queries
            )
            print("langchain:", json.dumps(lc), flush=True)

    results = {
        "ours_ingest_docs_per_s": our["ingest_docs_per_s"],
        "langchain_ingest_docs_per_s": lc["ingest_docs_per_s"],
        "ingest_ratio": our["ingest_docs_per_s"] / lc["ingest_docs_per_s"],
        "ours_same_work_ingest_docs_per_s": our["same_work_ingest_docs_per_s"],
        "same_work_ingest_ratio": our["same_work_ingest_docs_per_s"] / lc["ingest_docs_per_s"],
        "ours_p50_ms": our["p50_ms"],
        "langchain_p50_ms": lc["p50_ms"],
        "p50_ratio": our["p50_ms"] / lc["p50_ms"],
        "documents": len(docs),
        "queries": len(queries),
        "k": K,
    }
    results["summary"] = (
        f"ingest {our['ingest_docs_per_s']:.1f} vs {lc['ingest_docs_per_s']:.1f} docs/s"
        f" (x{results['ingest_ratio']:.2f}; one chunk per document like LangChain:"
        f" {our['same_work_ingest_docs_per_s']:.1f} docs/s,"
        f" x{results['same_work_ingest_ratio']:.2f}); query p50 {our['p50_ms']:.2f} ms over gRPC"
        f" vs {lc['p50_ms']:.2f} ms in-process (x{results['p50_ratio']:.2f})"
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(results["summary"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
