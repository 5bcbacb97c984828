"""How close together each query's nearest chunks are, per datastore size (exact, numpy).

    .venv/bin/python -m benchmarks.scale_lib.spread

The sizes and seeds are the full run's (10k and 100k with their top-ups, then 1M).
"""

from __future__ import annotations

import numpy as np

from benchmarks._harness import SCIFACT
from benchmarks.scale import CACHE
from benchmarks.scale_lib.vectors import blocks, query_set, scifact_embeddings

RUNS = ((10_000, 16), (100_000, 17), (1_000_000, 116))


def main() -> int:
    base, real = scifact_embeddings(SCIFACT, CACHE)
    queries = query_set(real, 400, 16)[:100]
    for total, seed in RUNS:
        best = np.full((len(queries), 0), -2.0, dtype=np.float32)
        for _, rows in blocks(base, total, seed):
            scores = np.concatenate([best, queries @ rows.T], axis=1)
            best = -np.sort(-scores, axis=1)[:, :100]
        near = (best >= best[:, 9:10] - 0.01).sum(axis=1)
        print(
            f"{total}: cosine 1st / 10th / 100th {np.median(best[:, 0]):.3f} / "
            f"{np.median(best[:, 9]):.3f} / {np.median(best[:, 99]):.3f}; "
            f"1st - 100th {np.median(best[:, 0] - best[:, 99]):.3f}; "
            f"within 0.01 of the 10th {np.median(near):.0f}; "
            f"10th - 11th {np.median(best[:, 9] - best[:, 10]):.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
