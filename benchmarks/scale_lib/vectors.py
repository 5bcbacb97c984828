"""Vectors for the scale benchmark: SciFact's real embeddings and synthetic ones around them.

Chunk ``i`` of a datastore is SciFact passage ``i`` while ``i`` is below the corpus size;
past it, a passage drawn at random plus Gaussian noise shaped like the real data around that
passage (the covariance of its ``NEIGHBOURS`` nearest real passages, times ``BANDWIDTH``
squared), renormalised: a kernel density estimate of the corpus with a local covariance.
``BANDWIDTH`` is calibrated so that a synthetic vector is as far from its nearest real
passage as a held-out real passage is (``benchmarks/scale_lib/realism.py``, docs/scale.md).
Every block of ``BLOCK`` vectors has its own seeded generator, so any range is reproducible
without drawing what comes before it, and exact neighbours can be found block by block.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]

BLOCK = 4096
NOISE = 0.5  # the query variants: isotropic noise of this norm (cosine ~ 0.89 to the query)
NEIGHBOURS = 20  # real passages whose spread shapes a synthetic vector's noise
# Scale of that spread, calibrated by benchmarks/scale_lib/realism.py: the median cosine of a
# synthetic vector to its nearest real passage equals a held-out real passage's (0.639).
BANDWIDTH = 1.88
_neighbour_cache: dict[bytes, npt.NDArray[np.intp]] = {}


def normalise(rows: npt.NDArray[np.floating]) -> Matrix:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    out: Matrix = (rows / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def _noisy(base: Matrix, picks: npt.NDArray[np.intp], rng: np.random.Generator) -> Matrix:
    sigma = NOISE / np.sqrt(base.shape[1])
    return normalise(base[picks] + rng.normal(0.0, sigma, size=(len(picks), base.shape[1])))


def neighbours(base: Matrix, k: int = NEIGHBOURS) -> npt.NDArray[np.intp]:
    """Row i: the ``k`` real passages nearest passage i (itself excluded), nearest first."""
    key = hashlib.blake2b(base.tobytes(), digest_size=16).digest() + bytes([k])
    if key not in _neighbour_cache:
        nearest = np.empty((len(base), k), dtype=np.intp)
        for first in range(0, len(base), 1024):
            sims = base[first : first + 1024] @ base.T
            rows = np.arange(len(sims))
            sims[rows, rows + first] = -np.inf
            part = np.argpartition(-sims, k, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
            nearest[first : first + 1024] = np.take_along_axis(part, order, axis=1)
        _neighbour_cache.clear()  # one corpus at a time
        _neighbour_cache[key] = nearest
    return _neighbour_cache[key]


def around(
    base: Matrix,
    picks: npt.NDArray[np.intp],
    rng: np.random.Generator,
    bandwidth: float = BANDWIDTH,
    k: int = NEIGHBOURS,
) -> Matrix:
    """Passage ``picks[j]`` plus noise with ``bandwidth**2`` times the covariance of its ``k``
    nearest passages, renormalised.

    The noise is sum_i (g_i - mean(g)) x_i / sqrt(k - 1) over those passages x_i with
    standard normal g_i, whose covariance is exactly their sample covariance.
    """
    near = neighbours(base, k)[picks]
    weights = rng.normal(0.0, 1.0, size=(len(picks), k))
    weights -= weights.mean(axis=1, keepdims=True)
    noise = np.zeros((len(picks), base.shape[1]))
    for i in range(k):
        noise += weights[:, i : i + 1] * base[near[:, i]]
    return normalise(base[picks] + bandwidth / np.sqrt(k - 1) * noise)


def _block(base: Matrix, number: int, seed: int) -> Matrix:
    rng = np.random.default_rng([seed, number])
    start = number * BLOCK
    out = around(base, rng.integers(0, len(base), size=BLOCK), rng)
    real = max(0, min(len(base) - start, BLOCK))
    if real:
        out[:real] = base[start : start + real]
    return out


def synthetic(base: Matrix, start: int, count: int, seed: int) -> Matrix:
    """Vectors ``start`` .. ``start + count - 1`` of the sequence built on ``base``."""
    if count <= 0:
        return np.zeros((0, base.shape[1]), dtype=np.float32)
    first, last = start // BLOCK, (start + count - 1) // BLOCK
    rows = np.concatenate([_block(base, b, seed) for b in range(first, last + 1)])
    offset = start - first * BLOCK
    return rows[offset : offset + count]


def blocks(base: Matrix, total: int, seed: int) -> Iterator[tuple[int, Matrix]]:
    """(start, vectors) covering ``0 .. total - 1`` in order."""
    for start in range(0, total, BLOCK):
        yield start, synthetic(base, start, min(BLOCK, total - start), seed)


def query_set(queries: Matrix, count: int, seed: int) -> Matrix:
    """The real queries first, then noisy variants of them, ``count`` in all."""
    if count <= len(queries):
        return queries[:count]
    rng = np.random.default_rng([seed, 2**40])  # no block has this number
    extra = _noisy(queries, rng.integers(0, len(queries), size=count - len(queries)), rng)
    return np.concatenate([queries, extra])


def exact_top_k(queries: Matrix, base: Matrix, total: int, seed: int, k: int) -> list[list[int]]:
    """Indices of each query's ``k`` nearest chunks by cosine (vectors are unit length)."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start, rows in blocks(base, total, seed):
        scores = queries @ rows.T
        ids = np.broadcast_to(np.arange(start, start + len(rows)), scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, ids], axis=1)
        keep = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(all_scores, keep, axis=1)
        best_ids = np.take_along_axis(all_ids, keep, axis=1)
    return [[int(i) for i in row] for row in best_ids]


def recall_at_k(found: Sequence[Sequence[int]], truth: Sequence[Sequence[int]], k: int) -> float:
    """Mean over queries of |found[:k] & truth[:k]| / k."""
    if not truth:
        return 0.0
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def scifact_embeddings(scifact: Path, cache: Path) -> tuple[Matrix, Matrix]:
    """(passages, queries) embedded with the bundled model once, then read from ``cache``."""
    if cache.exists():
        with np.load(cache) as saved:
            return saved["corpus"], saved["queries"]
    from service.embedding.registry import ModelRegistry
    from service.settings import BUNDLED_MODEL

    with (scifact / "corpus.jsonl").open(encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    with (scifact / "queries.jsonl").open(encoding="utf-8") as f:
        questions = [json.loads(line)["text"] for line in f if line.strip()]
    repo = Path(__file__).resolve().parent.parent.parent
    model = ModelRegistry(backend="onnx", cache_dir=repo / ".venv" / "model-cache").get(
        BUNDLED_MODEL
    )
    texts = [f"{d.get('title', '')} {d['text']}".strip() for d in docs]
    corpus = normalise(model.embed(texts))
    queries = normalise(model.embed(questions))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, corpus=corpus, queries=queries)
    return corpus, queries
