"""The scale benchmark's synthetic vectors and its recall computation (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.scale_lib.vectors import (
    BANDWIDTH,
    BLOCK,
    NEIGHBOURS,
    around,
    exact_top_k,
    neighbours,
    normalise,
    query_set,
    recall_at_k,
    synthetic,
)


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    return normalise(np.random.default_rng(7).normal(size=(300, 384)))


@pytest.fixture(scope="module")
def clustered() -> np.ndarray:
    """Two tight groups of 150 unit vectors, each spread over its own 5 directions."""
    rng = np.random.default_rng(11)
    centres = normalise(rng.normal(size=(2, 384)))
    spread = [normalise(rng.normal(size=(5, 384))) for _ in range(2)]
    rows = [centres[g] + 0.3 * rng.normal(size=(150, 5)) @ spread[g] for g in (0, 1)]
    return normalise(np.concatenate(rows))


def test_real_vectors_come_first_then_synthetic_ones_near_a_real_one(base: np.ndarray) -> None:
    rows = synthetic(base, 0, 1000, seed=1)
    assert np.array_equal(rows[:300], base)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert not np.isin(rows[300:], base).all(axis=1).any()
    assert (rows[300:] @ base.T).max(axis=1).min() > 0.2  # each near a passage
    assert len({r.tobytes() for r in rows[300:]}) == 700


def test_a_synthetic_vector_is_as_far_from_its_passage_as_the_bandwidth_says(
    base: np.ndarray,
) -> None:
    # Passage p plus noise of covariance BANDWIDTH**2 * C (C: its neighbours' sample
    # covariance), renormalised: cosine ~ 1 / sqrt(1 + BANDWIDTH**2 * trace(C)) to p.
    rng = np.random.default_rng(3)
    picks = rng.integers(0, len(base), size=3000)
    rows = around(base, picks, rng)
    near = base[neighbours(base)][picks]
    trace = ((near - near.mean(axis=1, keepdims=True)) ** 2).sum(axis=(1, 2)) / (NEIGHBOURS - 1)
    expected = 1 / np.sqrt(1 + BANDWIDTH**2 * trace)
    cos = (rows * base[picks]).sum(axis=1)
    assert abs(float(np.median(cos)) - float(np.median(expected))) < 0.02


def test_neighbours_are_the_nearest_others_in_order(base: np.ndarray) -> None:
    sims = base @ base.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :NEIGHBOURS]
    assert np.array_equal(neighbours(base), expected)
    assert np.array_equal(neighbours(base, 3), expected[:, :3])


def test_the_noise_follows_the_spread_of_the_passages_neighbours(clustered: np.ndarray) -> None:
    """Noise drawn from the neighbours' covariance stays in their span and in their group."""
    rng = np.random.default_rng(4)
    picks = rng.integers(0, 150, size=2000)  # passages of the first group
    rows = around(clustered, picks, rng, bandwidth=1.0)
    noise = rows - clustered[picks]
    group = clustered[:150] - clustered[:150].mean(axis=0)
    directions = np.linalg.svd(group, full_matrices=False)[2][:5]  # the group's 5 directions
    inside = np.linalg.norm(noise @ directions.T, axis=1) / np.linalg.norm(noise, axis=1)
    assert float(np.median(inside)) > 0.9  # isotropic noise would put ~ sqrt(5/384) there
    nearest = (rows @ clustered.T).argmax(axis=1)
    assert (nearest < 150).all()
    # bandwidth 0 is the passage itself; a larger bandwidth moves further from it
    same = around(clustered, picks[:10], np.random.default_rng(4), bandwidth=0.0)
    assert np.allclose(same, clustered[picks[:10]], atol=1e-6)
    cos = [
        float(
            np.median(
                (around(clustered, picks, np.random.default_rng(4), b) * clustered[picks]).sum(1)
            )
        )
        for b in (0.5, 1.0, 2.0)
    ]
    assert cos[0] > cos[1] > cos[2]


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
