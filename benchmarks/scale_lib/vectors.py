"""Vectors for the scale benchmark: SciFact's real embeddings and synthetic ones around them.

Chunk ``i`` of a datastore is SciFact passage ``i`` while ``i`` is below the corpus size;
past it, a passage drawn at random plus isotropic Gaussian noise, renormalised. Every block
of ``BLOCK`` vectors has its own seeded generator, so any range is reproducible without
drawing what comes before it, and exact neighbours can be found block by block.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]

BLOCK = 4096
NOISE = 0.5  # Euclidean norm of the noise added to a unit vector (cosine to it ~ 0.89)


def normalise(rows: npt.NDArray[np.floating]) -> Matrix:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    out: Matrix = (rows / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def _noisy(base: Matrix, picks: npt.NDArray[np.intp], rng: np.random.Generator) -> Matrix:
    sigma = NOISE / np.sqrt(base.shape[1])
    return normalise(base[picks] + rng.normal(0.0, sigma, size=(len(picks), base.shape[1])))


def _block(base: Matrix, number: int, seed: int) -> Matrix:
    rng = np.random.default_rng([seed, number])
    start = number * BLOCK
    out = _noisy(base, rng.integers(0, len(base), size=BLOCK), rng)
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
