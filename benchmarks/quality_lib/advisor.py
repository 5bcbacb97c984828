"""Threshold advisor: which similarity_threshold and max_results suit a datastore.

From judged queries it replays the service's rule on chunk hits fetched with no
threshold (take the top ``max_results`` hits, keep those whose vector score is >=
threshold) for every (threshold, max_results) pair on a grid. The vector score is
what the threshold applies to; in hybrid mode the ranking is RRF, and in keyword
mode no threshold applies at all. It measures the kept hits:

- precision: relevant kept hits / kept hits, pooled over all queries;
- recall: relevant documents with at least one kept hit / relevant documents;
- F1 of the two.

Objectives: ``f1`` (the pair with the best F1); ``recall>=R`` (the highest
threshold, then the smallest max_results, whose recall is at least R); ``keep>=R``
(the same, with recall relative to what that max_results finds with no threshold:
a threshold that drops at most 1 - R of the relevant hits). ``max_results`` pins the
grid to one value, e.g. the datastore's own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchmarks.quality_lib.beir import Qrels
from benchmarks.quality_lib.runner import ChunkHit, Hits

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
    curves: dict[int, list[Point]] = field(repr=False)
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
            # [threshold, precision, recall, F1] at every grid threshold, per max_results
            "curves": {
                str(n): [
                    [p.threshold, round(p.precision, 4), round(p.recall, 4), round(p.f1, 4)]
                    for p in curve
                ]
                for n, curve in self.curves.items()
            },
            "scores": {
                "relevant": _quantiles(self.relevant_scores),
                "non_relevant": _quantiles(self.nonrelevant_scores),
            },
        }


@dataclass(frozen=True)
class Objective:
    kind: str  # "f1" | "recall" | "keep"
    target: float | None = None


def parse_objective(text: str) -> Objective:
    """``f1``, ``recall>=R`` or ``keep>=R`` with 0 < R <= 1; ValueError otherwise."""
    if text == "f1":
        return Objective("f1")
    for kind in ("recall", "keep"):
        prefix = f"{kind}>="
        if text.startswith(prefix):
            try:
                target = float(text.removeprefix(prefix))
            except ValueError:
                break
            if 0.0 < target <= 1.0:
                return Objective(kind, target)
    raise ValueError(
        f"objective must be 'f1', 'recall>=R' or 'keep>=R' with 0 < R <= 1, got {text!r}"
    )


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
            score = _threshold_score(h)
            kept_scores.append(score)
            if judged.get(h.doc_id, 0) > 0:
                relevant_scores.append(score)
                best[h.doc_id] = max(best.get(h.doc_id, score), score)
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


def _threshold_score(hit: ChunkHit) -> float:
    if hit.vector_score is None:
        raise ValueError("hits without a vector score: no similarity_threshold applies")
    return hit.vector_score


def _count_at_least(scores: list[float]) -> np.ndarray:
    """How many scores are >= each threshold (the service keeps score >= threshold)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    return len(ordered) - np.searchsorted(ordered, THRESHOLDS, side="left")


def _choose(curves: dict[int, list[Point]], objective: Objective) -> Point | None:
    points = [p for curve in curves.values() for p in curve]
    if objective.kind == "f1":
        return max(points, key=lambda p: (round(p.f1, 6), p.threshold, -p.max_results))
    assert objective.target is not None
    floor = {
        n: objective.target * (c[0].recall if objective.kind == "keep" else 1.0)
        for n, c in curves.items()
    }
    ok = [p for p in points if p.recall >= floor[p.max_results]]
    if not ok:
        return None
    return max(ok, key=lambda p: (p.threshold, -p.max_results, p.precision))


def advise(
    qrels: Qrels,
    hits: Hits,
    objective: str = "f1",
    depth: int = 100,
    max_results: int | None = None,
) -> Advice:
    """The best (threshold, max_results) for ``objective`` from hits fetched ``depth`` deep.

    ``max_results`` pins the advice to that value; otherwise the grid is searched.
    """
    goal = parse_objective(objective)
    sizes = sorted(
        {n for n in MAX_RESULTS if n <= depth} | ({max_results} if max_results else set())
    )
    curves = {n: _curve(qrels, hits, n) for n in sizes}
    best = _choose({max_results: curves[max_results]} if max_results else curves, goal)
    rows = []
    for n, curve in curves.items():
        at_zero = curve[0]
        top_f1 = _choose({n: curve}, Objective("f1"))
        keep = _choose({n: curve}, Objective("keep", KEEP))
        assert top_f1 is not None and keep is not None
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
                "keep90_recall": round(keep.recall, 4),
            }
        )
    chosen_n = best.max_results if best is not None else (max_results or sizes[-1])
    relevant: list[float] = []
    other: list[float] = []
    for qid, found in hits.items():
        judged = qrels.get(qid, {})
        for h in found:
            (relevant if judged.get(h.doc_id, 0) > 0 else other).append(_threshold_score(h))
    return Advice(
        objective=objective,
        reachable=best is not None,
        best=best,
        curve=curves[chosen_n],
        by_max_results=rows,
        curves=curves,
        relevant_scores=relevant,
        nonrelevant_scores=other,
    )
