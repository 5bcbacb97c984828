"""How realistic the scale benchmark's synthetic vectors are, and the calibration of BANDWIDTH.

    .venv/bin/python -m benchmarks.scale_lib.realism

SciFact's passages are split in two random halves (fixed seed): A, the parents, and B, held
out. Synthetic sets as large as B are drawn from A alone, and every statistic is computed the
same way on B (real) and on each synthetic set, at equal size, none of them from HNSW:

- novelty: each point's cosine to its nearest passage of A (for B: a new real passage's);
- nn / 10th: each point's cosine to its 1st and 10th nearest other point of its own set;
- pair: mean cosine of two points of the set (the embeddings' shared direction);
- query statistics (SciFact's 300 real queries against the set): the 10th - 11th cosine
  gap, how many points lie within 0.01 of the 10th, relative contrast (mean distance / nearest
  distance, Euclidean), and the local intrinsic dimensionality (maximum likelihood, 20
  neighbours), of the queries and of the set's own points.

Medians over points or queries. The bandwidth (and, for comparison, an isotropic noise norm)
is set by bisection so that the median novelty equals B's: a synthetic chunk is as far from
the nearest real passage as a new real passage is. The other columns are not fitted.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from benchmarks._harness import SCIFACT
from benchmarks.scale import CACHE
from benchmarks.scale_lib.vectors import NOISE, Matrix, around, normalise, scifact_embeddings

SPLIT_SEED = 0
DRAW_SEED = 1
LID_K = 20


def _top(x: Matrix, y: Matrix, k: int, *, same: bool = False) -> np.ndarray:
    sims = x @ y.T
    if same:
        np.fill_diagonal(sims, -2.0)
    return -np.sort(-sims, axis=1)[:, :k]


def _distance(cos: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(2.0 - 2.0 * cos, 1e-12))


def _lid(nearest_cos: np.ndarray) -> np.ndarray:
    d = _distance(nearest_cos[:, :LID_K])
    return -1.0 / np.mean(np.log(d[:, :-1] / d[:, -1:]), axis=1)


def statistics(points: Matrix, parents: Matrix, queries: Matrix) -> dict[str, float]:
    own = _top(points, points, LID_K + 1, same=True)
    q = _top(queries, points, LID_K + 1)
    near = (q >= q[:, 9:10] - 0.01).sum(axis=1)
    contrast = _distance(queries @ points.T).mean(axis=1) / _distance(q[:, 0])
    pairs = points @ points.T
    med = np.median
    return {
        "novelty": float(med(_top(points, parents, 1)[:, 0])),
        "nn": float(med(own[:, 0])),
        "tenth": float(med(own[:, 9])),
        "pair": float(pairs[np.triu_indices(len(points), 1)].mean()),
        "gap_10_11": float(med(q[:, 9] - q[:, 10])),
        "within_001": float(med(near)),
        "contrast": float(med(contrast)),
        "lid_queries": float(med(_lid(q))),
        "lid_points": float(med(_lid(own))),
    }


def _isotropic(parents: Matrix, norm: float, count: int) -> Matrix:
    """The generator before the calibration: isotropic noise of Euclidean norm ``norm``."""
    rng = np.random.default_rng(DRAW_SEED)
    picks = rng.integers(0, len(parents), size=count)
    sigma = norm / np.sqrt(parents.shape[1])
    return normalise(parents[picks] + rng.normal(0.0, sigma, size=(count, parents.shape[1])))


def _local(parents: Matrix, bandwidth: float, count: int) -> Matrix:
    rng = np.random.default_rng(DRAW_SEED)
    return around(parents, rng.integers(0, len(parents), size=count), rng, bandwidth)


def calibrate(draw: Callable[[float], Matrix], parents: Matrix, target: float) -> float:
    """The scale (0.05 .. 5) whose draw's median novelty is ``target`` (bisection)."""
    low, high = 0.05, 5.0
    for _ in range(20):
        mid = (low + high) / 2
        novelty = float(np.median(_top(draw(mid), parents, 1)[:, 0]))
        low, high = (mid, high) if novelty > target else (low, mid)
    return (low + high) / 2


def main() -> int:
    base, queries = scifact_embeddings(SCIFACT, CACHE)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(base))
    parents, held_out = base[order[: len(base) // 2]], base[order[len(base) // 2 :]]
    count = len(held_out)
    real = statistics(held_out, parents, queries)
    target = real["novelty"]
    iso_norm = calibrate(lambda s: _isotropic(parents, s, count), parents, target)
    bandwidth = calibrate(lambda s: _local(parents, s, count), parents, target)
    rows = {
        f"real (held-out half, {count})": real,
        f"isotropic, norm {NOISE} (before)": statistics(
            _isotropic(parents, NOISE, count), parents, queries
        ),
        f"isotropic, norm {iso_norm:.2f} (calibrated)": statistics(
            _isotropic(parents, iso_norm, count), parents, queries
        ),
        f"local covariance, bandwidth {bandwidth:.2f} (calibrated)": statistics(
            _local(parents, bandwidth, count), parents, queries
        ),
    }
    columns = list(real)
    print("| set | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    return 0


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 0.01 else f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
