"""The scale benchmark's synthetic vectors and its recall computation (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.scale_lib.vectors import (
    BLOCK,
    NOISE,
    exact_top_k,
    normalise,
    query_set,
    recall_at_k,
    synthetic,
)


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    return normalise(np.random.default_rng(7).normal(size=(300, 384)))


def test_real_vectors_come_first_then_noisy_ones_near_a_real_one(base: np.ndarray) -> None:
    rows = synthetic(base, 0, 1000, seed=1)
    assert np.array_equal(rows[:300], base)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    nearest = (rows[300:] @ base.T).max(axis=1)
    expected = 1 / np.sqrt(1 + NOISE**2)  # a unit vector plus noise of norm NOISE, renormalised
    assert abs(float(np.median(nearest)) - expected) < 0.03
    assert not np.isin(rows[300:], base).all(axis=1).any()


def test_any_range_is_the_same_as_drawing_everything_before_it(base: np.ndarray) -> None:
    whole = synthetic(base, 0, 3 * BLOCK, seed=5)
    start = BLOCK - 17
    assert np.array_equal(
        synthetic(base, start, BLOCK + 40, seed=5), whole[start : start + BLOCK + 40]
    )
    assert not np.array_equal(synthetic(base, BLOCK, 50, seed=6), whole[BLOCK : BLOCK + 50])


def test_exact_top_k_matches_a_full_sort(base: np.ndarray) -> None:
    queries = query_set(base[:5], 12, seed=3)
    total = BLOCK + 500  # spans two blocks
    rows = synthetic(base, 0, total, seed=2)
    expected = np.argsort(-(queries @ rows.T), axis=1, kind="stable")[:, :10]
    assert exact_top_k(queries, base, total, seed=2, k=10) == expected.tolist()


def test_query_set_keeps_the_real_queries_and_adds_distinct_variants(base: np.ndarray) -> None:
    queries = query_set(base[:4], 10, seed=9)
    assert queries.shape == (10, 384)
    assert np.array_equal(queries[:4], base[:4])
    assert len({q.tobytes() for q in queries}) == 10
    assert np.array_equal(query_set(base[:4], 3, seed=9), base[:3])


def test_recall_counts_the_overlap_of_each_top_k() -> None:
    truth = [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert recall_at_k(truth, truth, 4) == 1.0
    assert recall_at_k([[4, 3, 9, 9], [8, 0, 0, 0]], truth, 4) == pytest.approx(3 / 8)
    assert recall_at_k([[1, 2], []], truth, 4) == pytest.approx(2 / 8)  # short answers miss
    assert recall_at_k([], [], 10) == 0.0
