"""The score table (service/scoring.py): operators, opclasses, distance -> score."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import scoring
from service.models import Metric


@pytest.mark.parametrize(
    ("metric", "distance", "expected"),
    [
        (Metric.COSINE, 0.25, 0.75),
        (Metric.DOT, -3.5, 3.5),
        (Metric.EUCLIDEAN, 1.0, 0.5),
        (Metric.MANHATTAN, 3.0, 0.25),
    ],
)
def test_score_table(metric: Metric, distance: float, expected: float) -> None:
    assert scoring.score(metric, distance) == expected


@pytest.mark.parametrize(
    ("metric", "sql"),
    [
        (Metric.COSINE, "(1 - distance)"),
        (Metric.DOT, "(- distance)"),
        (Metric.EUCLIDEAN, "(1 / (1 + distance))"),
        (Metric.MANHATTAN, "(1 / (1 + distance))"),
    ],
)
def test_the_sql_score_is_the_python_score(metric: Metric, sql: str) -> None:
    assert scoring.score_sql(metric, "distance") == sql
    for distance in (0.0, 0.5, 2.0):
        # the SQL expression, evaluated as Python, is the Python twin
        assert eval(sql, {}, {"distance": distance}) == pytest.approx(
            scoring.score(metric, distance)
        )


def test_every_metric_has_an_operator_and_an_opclass() -> None:
    assert set(scoring.OPERATORS) == set(Metric)
    assert len(set(scoring.OPERATORS.values())) == len(Metric)
    assert {scoring.opclass(m, 384) for m in Metric} == {
        "vector_cosine_ops",
        "vector_ip_ops",
        "vector_l2_ops",
        "vector_l1_ops",
    }


def test_index_types_follow_pgvector_limits() -> None:
    assert scoring.index_type(scoring.MAX_VECTOR_INDEX_DIMS) == "vector"
    assert scoring.index_type(scoring.MAX_VECTOR_INDEX_DIMS + 1) == "halfvec"
    assert scoring.index_type(scoring.MAX_HALFVEC_INDEX_DIMS) == "halfvec"
    assert scoring.index_type(scoring.MAX_HALFVEC_INDEX_DIMS + 1) is None
    assert scoring.opclass(Metric.MANHATTAN, 3000) == "halfvec_l1_ops"
    assert scoring.opclass(Metric.COSINE, 4001) == "vector_cosine_ops"  # no index: exact only


distances = st.floats(0, 1e6, allow_nan=False)


@given(metric=st.sampled_from(list(Metric)), a=distances, b=distances)
def test_a_nearer_chunk_never_scores_lower(metric: Metric, a: float, b: float) -> None:
    near, far = sorted((a, b))
    assert scoring.score(metric, near) >= scoring.score(metric, far)


@given(distance=distances)
def test_distance_metrics_score_in_zero_to_one(distance: float) -> None:
    for metric in (Metric.EUCLIDEAN, Metric.MANHATTAN):
        assert 0.0 < scoring.score(metric, distance) <= 1.0
    if distance <= 2.0:  # cosine distance lies in [0, 2]
        assert -1.0 <= scoring.score(Metric.COSINE, distance) <= 1.0
