"""float32 against float16 (halfvec) HNSW indexes on a BEIR dataset, through the service.

Ingests the corpus once (server-side chunking with the server's defaults) into one
datastore, then, for each metric and each ``config.vector_precision``, rebuilds the
index with ``UpdateDatastore`` and measures: the index size (``pg_relation_size``) and
build time, HNSW recall@10 against exact search (documents and chunks), nDCG@10,
Recall@10 and Recall@100 of HNSW and of exact search, and how far the scores of the
chunks both searches return differ. Writes OUT/results.json and OUT/report.md.

    RETRIEVAL_STATEMENT_TIMEOUT_S=600 .venv/bin/python -m benchmarks.vector_precision \\
        DATASET_DIR --out OUT [--split test] [--metrics cosine,dot,euclidean,manhattan]
        [--datastore ID]  # with RETRIEVAL_DATABASE_URL: resume an interrupted ingest

Both indexes are built the same way (a rebuild over the whole partition), so their
graphs are comparable; the ingest itself fills a float32 index that is then replaced.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2

from benchmarks.quality_lib import beir, endpoint, metrics, runner
from benchmarks.quality_lib.config import METRICS, RunConfig
from service.app import App
from service.client import Client, pb
from service.storage.partitions import index_name, partition_name

_started = time.monotonic()
PRECISIONS = {"float32": pb.VECTOR_PRECISION_FLOAT32, "float16": pb.VECTOR_PRECISION_FLOAT16}
PASSES = [
    runner.QueryPass("exact", True, 100, True),
    runner.QueryPass("hnsw", False, 100, True),
    # max_results 10: the datastore's own ef_search applies (the server uses max(ef, k))
    runner.QueryPass("hnsw@10", False, 10, True),
    runner.QueryPass("exact_chunks@10", True, 10, False),
    runner.QueryPass("hnsw_chunks@10", False, 10, False),
]


def log(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", flush=True)


def _update(client: Client, ds_id: str, metric: str, precision: str) -> float:
    """Set metric and precision (one index rebuild); returns the call's seconds."""
    started = time.monotonic()
    client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=ds_id,
                similarity_metric=METRICS[metric],
                config=pb.DatastoreConfig(vector_precision=PRECISIONS[precision]),
            ),
            update_mask=field_mask_pb2.FieldMask(
                paths=["similarity_metric", "config.vector_precision"]
            ),
        ),
        timeout=900,
    )
    return time.monotonic() - started


def _sizes(app: App, ds_id: str) -> dict[str, int]:
    ds = uuid.UUID(ds_id)
    with app.db.connection() as conn:
        row = conn.execute(
            "SELECT pg_relation_size(%s::regclass), pg_table_size(%s::regclass)",
            (f"public.{index_name(ds)}", f"public.{partition_name(ds)}"),
        ).fetchone()
    assert row is not None
    return {"index_bytes": int(row[0]), "table_bytes": int(row[1])}


def _chunk_recall(ann: runner.Hits, exact: runner.Hits) -> float:
    values = []
    for qid, truth in exact.items():
        want = {(h.doc_id, h.chunk_index) for h in truth}
        if want:
            got = {(h.doc_id, h.chunk_index) for h in ann.get(qid, [])}
            values.append(len(got & want) / len(want))
    return sum(values) / len(values) if values else 0.0


def _score_gap(ann: runner.Hits, exact: runner.Hits) -> float:
    """The largest score difference of one chunk between the two searches."""
    gap = 0.0
    for qid, truth in exact.items():
        scores = {(h.doc_id, h.chunk_index): h.score for h in truth}
        for h in ann.get(qid, []):
            if (h.doc_id, h.chunk_index) in scores:
                gap = max(gap, abs(h.score - scores[(h.doc_id, h.chunk_index)]))
    return gap


def measure(
    client: Client, app: App, ds_id: str, dataset: beir.Dataset, metric: str, precision: str
) -> dict[str, Any]:
    """Rebuild the index for (metric, precision) and run every pass."""
    build_s = _update(client, ds_id, metric, precision)
    log(f"{metric}/{precision}: index rebuilt in {build_s:.1f}s")
    out = {
        spec.name: runner.run_pass(client, ds_id, dataset.queries, "vector", spec, log)
        for spec in PASSES
    }
    docs = {name: metrics.document_run(r.hits, 100) for name, r in out.items()}
    figures = {
        name: metrics.evaluate(dataset.qrels, docs[name]) for name in ("exact", "hnsw", "hnsw@10")
    }
    return {
        "metric": metric,
        "precision": precision,
        **_sizes(app, ds_id),
        "build_s": build_s,
        "exact": figures["exact"],
        "hnsw": figures["hnsw"],
        "hnsw@10": {k: figures["hnsw@10"][k] for k in ("ndcg@10", "recall@10", "mrr@10")},
        "recall@10_vs_exact_documents": metrics.overlap_recall(
            docs["hnsw@10"], docs["exact"], 10, dataset.queries
        ),
        "recall@10_vs_exact_chunks": _chunk_recall(
            out["hnsw_chunks@10"].hits, out["exact_chunks@10"].hits
        ),
        "max_score_gap_vs_exact": _score_gap(
            out["hnsw_chunks@10"].hits, out["exact_chunks@10"].hits
        ),
        "hnsw@10_qps": out["hnsw@10"].qps,
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        f"# Vector precision on {results['dataset']['name']}",
        "",
        f"{results['dataset']['documents']} documents, {results['chunks']} chunks, "
        f"{results['dataset']['queries']} judged queries; ef_search {results['ef_search']}.",
        "",
        "| metric | precision | index MB | build s | recall@10 vs exact (docs / chunks) "
        "| nDCG@10 HNSW@10 | nDCG@10 exact | Recall@100 HNSW | max score gap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['metric']} | {r['precision']} | {r['index_bytes'] / 2**20:.2f} "
            f"| {r['build_s']:.1f} | {r['recall@10_vs_exact_documents']:.4f} / "
            f"{r['recall@10_vs_exact_chunks']:.4f} | {r['hnsw@10']['ndcg@10']:.5f} "
            f"| {r['exact']['ndcg@10']:.5f} | {r['hnsw']['recall@100']:.5f} "
            f"| {r['max_score_gap_vs_exact']:.2g} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    dataset = beir.load(args.dataset, args.split)
    metric_names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metric_names if m not in METRICS]
    if unknown:
        raise SystemExit(f"error: unknown metrics {unknown}")
    config = RunConfig(dataset=dataset.name)
    log(f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries")
    with endpoint.embedded_app(service_key=bool(args.datastore)) as (app, client, _, _):
        if args.datastore:  # resume: documents already stored come back UNCHANGED
            ds = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=args.datastore))
        else:
            ds = runner.create_datastore(client, config)
        _update(client, ds.id, metric_names[0], "float32")
        ingest = runner.ingest(
            client, ds.id, runner.document_inputs(dataset, config), config.ingest_batch, log
        )
        runs = [
            measure(client, app, ds.id, dataset, metric, precision)
            for metric in metric_names
            # float16 first: the float32 index the ingest filled is then rebuilt too
            for precision in ("float16", "float32")
        ]
    results = {
        "dataset": {
            "name": dataset.name,
            "split": args.split,
            "documents": len(dataset.corpus),
            "queries": len(dataset.queries),
        },
        "chunks": ingest.chunks,
        "ef_search": ds.config.hnsw.ef_search,
        "hnsw": {"m": ds.config.hnsw.m, "ef_construction": ds.config.hnsw.ef_construction},
        "runs": runs,
        "machine": f"{platform.node()} {platform.machine()}, {platform.processor() or ''}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "total_s": time.monotonic() - _started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "report.md").write_text(report(results), encoding="utf-8")
    print(report(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--out", type=Path, required=True, help="folder for results.json, report.md")
    p.add_argument("--split", default="test", help="qrels/<split>.tsv (default test)")
    p.add_argument("--metrics", default="cosine", help="comma-separated (default cosine)")
    p.add_argument(
        "--datastore",
        help="resume into this datastore of the database RETRIEVAL_DATABASE_URL names",
    )
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
