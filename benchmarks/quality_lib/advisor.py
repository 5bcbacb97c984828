"""Threshold advisor: which similarity_threshold and max_results suit a datastore.

From judged queries it replays the service's rule on chunk hits fetched with no
threshold (take the top ``max_results`` hits, keep those with score >= threshold)
for every pair on a grid, and measures the kept hits:

- precision: relevant kept hits / kept hits, pooled over all queries;
- recall: relevant documents with at least one kept hit / relevant documents;
- F1 of the two.

Objectives: ``f1`` (the pair with the best F1) or ``recall>=R`` (the highest
threshold, then the smallest max_results, whose recall is at least R).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchmarks.quality_lib.beir import Qrels
from benchmarks.quality_lib.runner import Hits

THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.01), 2)
MAX_RESULTS = (1, 2, 3, 5, 10, 20, 50, 100)
KEEP = 0.9  # the "keep 90%" column: highest threshold losing <= 10% of the recall


@dataclass(frozen=True)
class Point:
    threshold: float
    max_results: int
    precision: float
    recall: float
    f1: float
    kept_per_query: float


@dataclass
class Advice:
    objective: str
    reachable: bool
    best: Point | None
    curve: list[Point]  # every threshold at the advised max_results
    by_max_results: list[dict[str, Any]]
    relevant_scores: list[float] = field(repr=False)
    nonrelevant_scores: list[float] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the advice and the score distributions' quantiles."""
        return {
            "objective": self.objective,
            "reachable": self.reachable,
            "similarity_threshold": None if self.best is None else self.best.threshold,
            "max_results": None if self.best is None else self.best.max_results,
            "at_advice": None if self.best is None else asdict(self.best),
            "by_max_results": self.by_max_results,
            "scores": {
                "relevant": _quantiles(self.relevant_scores),
                "non_relevant": _quantiles(self.nonrelevant_scores),
            },
        }


def parse_objective(text: str) -> float | None:
    """None for ``f1``; the recall target R for ``recall>=R``; ValueError otherwise."""
    if text == "f1":
        return None
    if text.startswith("recall>="):
        target = float(text.removeprefix("recall>="))
        if 0.0 < target <= 1.0:
            return target
    raise ValueError(f"objective must be 'f1' or 'recall>=R' with 0 < R <= 1, got {text!r}")


def _quantiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    q = np.quantile(np.asarray(values), [0.05, 0.25, 0.5, 0.75, 0.95])
    out: dict[str, float | int] = {"count": len(values), "mean": round(float(np.mean(values)), 4)}
    out.update({f"p{p}": round(float(v), 4) for p, v in zip((5, 25, 50, 75, 95), q, strict=True)})
    return out


def _curve(qrels: Qrels, hits: Hits, n: int) -> list[Point]:
    """Precision, recall and F1 of the top-n hits kept at every threshold."""
    kept_scores: list[float] = []  # every hit in the top n
    relevant_scores: list[float] = []  # the relevant ones
    best_per_doc: list[float] = []  # best score of each relevant document in the top n
    total_relevant = sum(1 for docs in qrels.values() for s in docs.values() if s > 0)
    for qid, found in hits.items():
        judged = qrels.get(qid, {})
        best: dict[str, float] = {}
        for h in found[:n]:
            kept_scores.append(h.score)
            if judged.get(h.doc_id, 0) > 0:
                relevant_scores.append(h.score)
                best[h.doc_id] = max(best.get(h.doc_id, h.score), h.score)
        best_per_doc.extend(best.values())
    kept = _count_at_least(kept_scores)
    relevant = _count_at_least(relevant_scores)
    found_docs = _count_at_least(best_per_doc)
    points = []
    for i, t in enumerate(THRESHOLDS):
        precision = relevant[i] / kept[i] if kept[i] else 1.0
        recall = found_docs[i] / total_relevant if total_relevant else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        points.append(Point(float(t), n, precision, recall, f1, kept[i] / max(len(hits), 1)))
    return points


def _count_at_least(scores: list[float]) -> np.ndarray:
    """How many scores are >= each threshold (the service keeps score >= threshold)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    return len(ordered) - np.searchsorted(ordered, THRESHOLDS, side="left")


def _choose(points: list[Point], target: float | None) -> Point | None:
    if target is None:
        return max(points, key=lambda p: (round(p.f1, 6), p.threshold, -p.max_results))
    ok = [p for p in points if p.recall >= target]
    if not ok:
        return None
    return max(ok, key=lambda p: (p.threshold, -p.max_results, p.precision))


def advise(qrels: Qrels, hits: Hits, objective: str = "f1", depth: int = 100) -> Advice:
    """The best (threshold, max_results) for ``objective`` from hits fetched ``depth`` deep."""
    target = parse_objective(objective)
    sizes = [n for n in MAX_RESULTS if n <= depth]
    curves = {n: _curve(qrels, hits, n) for n in sizes}
    best = _choose([p for c in curves.values() for p in c], target)
    rows = []
    for n, curve in curves.items():
        at_zero = curve[0]
        top_f1 = _choose(curve, None)
        assert top_f1 is not None
        keep = max(
            (p for p in curve if p.recall >= KEEP * at_zero.recall), key=lambda p: p.threshold
        )
        rows.append(
            {
                "max_results": n,
                "recall_at_threshold_0": round(at_zero.recall, 4),
                "precision_at_threshold_0": round(at_zero.precision, 4),
                "best_f1_threshold": top_f1.threshold,
                "best_f1": round(top_f1.f1, 4),
                "best_f1_precision": round(top_f1.precision, 4),
                "best_f1_recall": round(top_f1.recall, 4),
                "keep90_threshold": keep.threshold,
                "keep90_precision": round(keep.precision, 4),
            }
        )
    chosen_n = best.max_results if best is not None else sizes[-1]
    relevant: list[float] = []
    other: list[float] = []
    for qid, found in hits.items():
        judged = qrels.get(qid, {})
        for h in found:
            (relevant if judged.get(h.doc_id, 0) > 0 else other).append(h.score)
    return Advice(
        objective=objective,
        reachable=best is not None,
        best=best,
        curve=curves[chosen_n],
        by_max_results=rows,
        relevant_scores=relevant,
        nonrelevant_scores=other,
    )
