"""Retrieval quality through the real service, on any BEIR-format dataset.

Creates a datastore, ingests the corpus over gRPC, runs every judged query through
RetrievalService.Query (exact search, HNSW, HNSW at max_results 10, and a chunk-level
pass for the threshold advisor), and writes OUT/results.json, OUT/report.md and PNG
plots. Metrics are document-level (a document scores its best chunk's score),
computed by ir-measures (trec_eval).

    .venv/bin/python -m benchmarks.quality DATASET_DIR --out OUT_DIR [--reproduce]
        [--mode vector|hybrid|keyword] [--exact] [--target HOST:PORT --key KEY]

``--reproduce`` is MTEB's setting (one chunk per document = title + " " + text,
truncated by the model; cosine; exact search; top 1,000), to compare with
published figures. Without ``--target`` the service is started in-process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from benchmarks.quality_lib import apply, beir, endpoint, metrics, plots, report, runner
from benchmarks.quality_lib.advisor import Advice, advise, parse_objective
from benchmarks.quality_lib.config import METRICS, MODES, RunConfig, reproduction
from service.client import Client, pb

_started = time.monotonic()
NO_ADVICE = {
    "reachable": False,
    "not_applicable": "keyword mode: hits have no vector score, no similarity_threshold applies",
}
AT_10 = {"ndcg@10", "recall@10", "mrr@10", "seconds", "qps"}


def log(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quality.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "dataset", nargs="?", type=Path, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/"
    )
    p.add_argument("--out", type=Path, help="folder for results.json, report.md and the plots")
    p.add_argument("--split", default="test", help="qrels/<split>.tsv (default test)")
    p.add_argument("--reproduce", action="store_true", help="MTEB's setting (see above)")
    p.add_argument("--mode", choices=sorted(MODES), default="vector", help="search mode")
    p.add_argument("--exact", action="store_true", help="primary figures from exact search")
    p.add_argument("--metric", choices=sorted(METRICS), default="cosine")
    p.add_argument("--ef-search", type=int, help="HNSW ef_search (default: server's)")
    p.add_argument("--chunk-size", type=int, help="tokens per chunk (default: server's)")
    p.add_argument("--chunk-overlap", type=int, help="overlap in tokens (default: server's)")
    p.add_argument("--top-k", type=int, default=100, help="documents per query (default 100)")
    p.add_argument(
        "--title",
        choices=["prepend", "field"],
        default="prepend",
        help="prepend: embed title + ' ' + text (default); field: send the title apart",
    )
    p.add_argument("--objective", default="f1", help="advisor objective: f1 | recall>=R | keep>=R")
    p.add_argument(
        "--advise-max-results",
        type=int,
        help="advise a threshold for this max_results (default: search 1..100)",
    )
    p.add_argument("--advisor-depth", type=int, default=100, help="chunk hits per query")
    p.add_argument("--target", help="HOST:PORT of a running server (default: start one)")
    p.add_argument("--key", help="API key for --target")
    p.add_argument("--key-file", type=Path, help="file holding the API key for --target")
    p.add_argument("--keep", action="store_true", help="keep the benchmark datastore")
    p.add_argument("--apply", metavar="DATASTORE_ID", help="put the advice on this datastore")
    p.add_argument("--from-results", type=Path, help="apply the advice of an earlier results.json")
    p.add_argument("--baseline", type=Path, help="another run's results.json, shown alongside")
    return p


def _key(args: argparse.Namespace) -> str:
    if args.key_file is not None:
        return str(args.key_file.read_text(encoding="utf-8").strip())
    if not args.key:
        raise SystemExit("error: --target needs --key or --key-file")
    return str(args.key)


@contextmanager
def _service(args: argparse.Namespace) -> Iterator[tuple[Client, str]]:
    if args.target:
        with endpoint.remote(args.target, _key(args)) as client:
            yield client, args.target
        return
    log("starting an embedded service (PostgreSQL + model) ...")
    with endpoint.embedded() as (client, target, _):
        log(f"service on {target}")
        yield client, target


def _apply(client: Client, datastore_id: str, advice: dict[str, Any]) -> None:
    if not advice.get("reachable"):
        raise SystemExit("error: the advice has no threshold to apply (objective not reachable)")
    threshold, max_results = advice["similarity_threshold"], advice["max_results"]
    updated = apply.apply_advice(client, datastore_id, threshold, max_results)
    log(
        f"applied to datastore {updated.id}: similarity_threshold "
        f"{updated.similarity_threshold:.2f}, max_results {updated.max_results}"
    )


def _passes(config: RunConfig) -> list[runner.QueryPass]:
    passes = [
        runner.QueryPass("exact", True, config.top_k, True),
        runner.QueryPass("hnsw", False, config.top_k, True),
        # max_results 10 keeps ef_search at the datastore's value (the server uses max(ef, k))
        runner.QueryPass("hnsw@10", False, 10, True),
    ]
    if config.mode != "keyword":  # keyword hits have no vector score to put a threshold on
        passes.append(runner.QueryPass("advisor", config.exact, config.advisor_depth, False))
    return passes


def _measure(
    client: Client, ds: pb.Datastore, dataset: beir.Dataset, config: RunConfig
) -> tuple[dict[str, Any], Advice | None]:
    """Run the query passes; return the figures and the advice."""
    out: dict[str, runner.PassResult] = {}
    for spec in _passes(config):
        log(f"query pass {spec.name}: max_results {spec.max_results}, exact {spec.exact}")
        out[spec.name] = runner.run_pass(client, ds.id, dataset.queries, config.mode, spec, log)
    docs = {name: metrics.document_run(r.hits, config.top_k) for name, r in out.items()}
    runs = {
        name: {**metrics.evaluate(dataset.qrels, docs[name]), "seconds": r.seconds, "qps": r.qps}
        for name, r in out.items()
        if name != "advisor"
    }
    # ten documents say nothing about recall@100 or MAP
    runs["hnsw@10"] = {k: v for k, v in runs["hnsw@10"].items() if k in AT_10}
    hnsw_vs_exact = {
        "ef_search": ds.config.hnsw.ef_search,
        "recall@10": metrics.overlap_recall(docs["hnsw@10"], docs["exact"], 10, dataset.queries),
        "ndcg@10_exact": runs["exact"]["ndcg@10"],
        "ndcg@10_hnsw": runs["hnsw@10"]["ndcg@10"],
        "ndcg@10_diff": runs["hnsw@10"]["ndcg@10"] - runs["exact"]["ndcg@10"],
    }
    if "advisor" not in out:
        return {"runs": runs, "hnsw_vs_exact": hnsw_vs_exact}, None
    advice = advise(
        dataset.qrels,
        out["advisor"].hits,
        config.objective,
        config.advisor_depth,
        config.advise_max_results,
    )
    return {"runs": runs, "hnsw_vs_exact": hnsw_vs_exact}, advice


def _results(
    config: RunConfig,
    dataset: beir.Dataset,
    ds: pb.Datastore,
    ingest: runner.IngestStats,
    measured: dict[str, Any],
    advice: Advice | None,
    target: str,
    out_dir: Path,
) -> dict[str, Any]:
    primary = measured["runs"][config.search]
    results: dict[str, Any] = {name: primary[name] for name in report.NAMES}
    published = report.published_for(dataset.name, config.reproduce)
    results.update(
        config=config.as_dict(),
        dataset={
            "name": dataset.name,
            "documents": len(dataset.corpus),
            "queries": len(dataset.queries),
            "judgements": sum(len(v) for v in dataset.qrels.values()),
        },
        datastore={
            "id": ds.id,
            "kept": False,
            "chunk_size": ds.config.chunk_size,
            "chunk_overlap": ds.config.chunk_overlap,
            "ef_search": ds.config.hnsw.ef_search,
            "metric": config.metric,
        },
        published=published,
        published_source=report.PUBLISHED_SOURCE if published else None,
        published_diff=({k: results[k] - v for k, v in published.items()} if published else None),
        **measured,
        advice=advice.summary() if advice else NO_ADVICE,
        ingest={
            "documents": ingest.documents,
            "chunks": ingest.chunks,
            "seconds": ingest.seconds,
            "docs_per_s": ingest.docs_per_s,
        },
        server=target,
    )
    if advice is not None and advice.best is not None:
        t, n = advice.best.threshold, advice.best.max_results
        results["apply"] = {
            "grpcurl": apply.grpcurl_command(target, "DATASTORE_ID", t, n),
            "benchmark": apply.benchmark_command(
                str(out_dir / "results.json"), target, "DATASTORE_ID"
            ),
        }
    return results


def _write(
    out_dir: Path, results: dict[str, Any], advice: Advice | None, baseline: Path | None
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    report.write_json(out_dir / "results.json", results)
    other = json.loads(baseline.read_text(encoding="utf-8")) if baseline else None
    if other is not None:
        other["label"] = _label(other)
    (out_dir / "report.md").write_text(report.markdown(results, other), encoding="utf-8")
    title = f"{results['dataset']['name']}: {_label(results)}"
    bars = {"exact": results["runs"]["exact"], "HNSW": results["runs"]["hnsw"]}
    if results.get("published"):
        bars["published"] = results["published"]
    if other is not None:
        bars[f"baseline ({other['label']})"] = other
    plots.metrics_chart(out_dir / "metrics.png", bars, title)
    if advice is not None:
        depth = results["config"]["advisor_depth"]
        plots.score_histogram(out_dir / "scores.png", advice, depth, title)
        plots.threshold_chart(out_dir / "threshold.png", advice, title)


def _label(results: dict[str, Any]) -> str:
    cfg, store = results["config"], results["datastore"]
    if cfg["reproduce"]:
        return f"reproduction, {cfg['search']}"
    return f"chunks {store['chunk_size']}/{store['chunk_overlap']}, {cfg['search']}"


def run(args: argparse.Namespace) -> int:
    """The whole benchmark; returns the exit status."""
    dataset = beir.load(args.dataset, args.split)
    config = RunConfig(
        dataset=dataset.name,
        mode=args.mode,
        exact=args.exact,
        metric=args.metric,
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        ef_search=args.ef_search,
        top_k=args.top_k,
        title=args.title,
        advisor_depth=args.advisor_depth,
        objective=args.objective,
        advise_max_results=args.advise_max_results,
    )
    if args.reproduce:
        config = reproduction(config)
    log(
        f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} judged queries; "
        f"{'reproduction' if config.reproduce else 'service chunking'}, mode {config.mode}, "
        f"metric {config.metric}, primary search {config.search}, top_k {config.top_k}"
    )
    with _service(args) as (client, target):
        try:
            ds = runner.create_datastore(client, config)
            runner.probe_mode(client, ds.id, config.mode)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            print(f"error: the server refuses this run: {e.details()}", file=sys.stderr)
            return 2
        try:
            return _run_on(client, target, ds, dataset, config, args)
        finally:
            if not args.keep:
                runner.delete_datastore(client, ds.id)


def _run_on(
    client: Client,
    target: str,
    ds: pb.Datastore,
    dataset: beir.Dataset,
    config: RunConfig,
    args: argparse.Namespace,
) -> int:
    log(
        f"datastore {ds.id}: chunk_size {ds.config.chunk_size}, overlap "
        f"{ds.config.chunk_overlap}, ef_search {ds.config.hnsw.ef_search}; ingesting ..."
    )
    docs = runner.document_inputs(dataset, config)
    ingest = runner.ingest(client, ds.id, docs, config.ingest_batch, log)
    measured, advice = _measure(client, ds, dataset, config)
    results = _results(config, dataset, ds, ingest, measured, advice, target, args.out)
    results["datastore"]["kept"] = bool(args.keep)
    results["timing"] = {"total_s": time.monotonic() - _started}
    _write(args.out, results, advice, args.baseline)
    if args.apply:
        _apply(client, args.apply, results["advice"])
    _summary(results)
    log(f"wrote {args.out}/: results.json, report.md and the plots")
    return 0


def _summary(results: dict[str, Any]) -> None:
    log("figures: " + ", ".join(f"{n} {results[n]:.5f}" for n in report.NAMES))
    if results.get("published_diff"):
        log(
            "vs published: "
            + ", ".join(f"{n} {v:+.5f}" for n, v in results["published_diff"].items())
        )
    hv = results["hnsw_vs_exact"]
    log(f"HNSW recall@10 vs exact {hv['recall@10']:.4f}, nDCG@10 diff {hv['ndcg@10_diff']:+.5f}")
    adv = results["advice"]
    if adv["reachable"]:
        log(
            f"advice ({adv['objective']}): similarity_threshold {adv['similarity_threshold']:.2f}, "
            f"max_results {adv['max_results']}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        parse_objective(args.objective)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    if args.from_results is not None:
        if not (args.apply and args.target):
            raise SystemExit("error: --from-results needs --apply DATASTORE_ID and --target")
        saved = json.loads(args.from_results.read_text(encoding="utf-8"))
        with endpoint.remote(args.target, _key(args)) as client:
            _apply(client, args.apply, saved["advice"])
        return 0
    if args.dataset is None or args.out is None:
        raise SystemExit("error: give DATASET_DIR and --out OUT_DIR")
    if args.advise_max_results and not 1 <= args.advise_max_results <= args.advisor_depth:
        raise SystemExit("error: --advise-max-results must be 1..--advisor-depth")
    if args.apply and not args.target:
        raise SystemExit("error: --apply needs --target (an embedded service ends with the run)")
    try:
        return run(args)
    except beir.DatasetError as e:
        raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
    sys.exit(main())
