"""Document-level ranking metrics with ir-measures (trec_eval underneath)."""

from __future__ import annotations

from collections.abc import Iterable

import ir_measures
from ir_measures import AP, RR, R, nDCG

from benchmarks.quality_lib.beir import Qrels
from benchmarks.quality_lib.runner import Hits

Run = dict[str, dict[str, float]]  # query id -> document id -> score

MEASURES = {
    "ndcg@10": nDCG @ 10,
    "recall@10": R @ 10,
    "recall@100": R @ 100,
    "mrr@10": RR @ 10,
    "map": AP,  # over the whole ranked list the run retrieved (top_k documents)
}


def document_run(hits: Hits, depth: int | None = None) -> Run:
    """Chunk hits to a document ranking: a document scores its best chunk's score."""
    run: Run = {}
    for qid, found in hits.items():
        docs: dict[str, float] = {}
        for h in found:
            if h.score > docs.get(h.doc_id, float("-inf")):
                docs[h.doc_id] = h.score
        if depth is not None:
            docs = dict(sorted(docs.items(), key=lambda kv: -kv[1])[:depth])
        run[qid] = docs
    return run


def evaluate(qrels: Qrels, run: Run) -> dict[str, float]:
    """The headline measures, averaged over every judged query (no hits scores 0)."""
    values = ir_measures.calc_aggregate(list(MEASURES.values()), qrels, _nonempty(run))
    return {name: float(values.get(measure, 0.0)) for name, measure in MEASURES.items()}


def per_query(qrels: Qrels, run: Run, name: str) -> dict[str, float]:
    """One measure for each judged query (0 where the run has nothing)."""
    scores = {q: 0.0 for q in qrels}
    for m in ir_measures.iter_calc([MEASURES[name]], qrels, _nonempty(run)):
        scores[m.query_id] = float(m.value)
    return scores


def _nonempty(run: Run) -> Run:
    # trec_eval drops queries without results from the average; keep them in as zeros
    return {q: docs for q, docs in run.items() if docs}


def top(run: Run, qid: str, k: int) -> list[str]:
    """The top-k document ids of one query, trec_eval's order (score, then id, descending)."""
    ranked = sorted(run.get(qid, {}).items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    return [doc for doc, _ in ranked[:k]]


def overlap_recall(candidate: Run, reference: Run, k: int, queries: Iterable[str]) -> float:
    """Mean |top-k(candidate) ∩ top-k(reference)| / |top-k(reference)|: ANN recall vs exact."""
    values = []
    for qid in queries:
        ref = top(reference, qid, k)
        if ref:
            values.append(len(set(top(candidate, qid, k)) & set(ref)) / len(ref))
    return sum(values) / len(values) if values else 0.0
