"""Nearest-neighbour search in one datastore's partition.

The ANN scan takes the top-k by distance in a MATERIALIZED CTE; the threshold is
applied by the outer query on the score the caller sees, never under the index
scan (which would silently cap results at ef_search).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from service import scoring
from service.models import Datastore, Hit, Vector
from service.storage.partitions import embedding_expr, partition_name


@dataclass(frozen=True)
class Candidate:
    hit: Hit
    passes: bool  # score >= threshold


def build_query(
    datastore: Datastore, vector: Vector, k: int, threshold: float
) -> tuple[sql.Composed, dict[str, Any]]:
    """The search SQL and its parameters (exposed so tests can EXPLAIN it)."""
    dims = datastore.config.dimensions
    kind = scoring.index_type(dims) or "vector"
    distance = sql.SQL("{} {} %(q)s::{}({})").format(
        embedding_expr(dims),
        sql.SQL(scoring.OPERATORS[datastore.metric]),
        sql.SQL(kind),
        sql.Literal(dims),
    )
    score = sql.SQL(scoring.score_sql(datastore.metric, "c.distance"))
    query = sql.SQL(
        "WITH candidates AS MATERIALIZED ("
        " SELECT c.id, c.document_id, c.chunk_index, c.content, c.metadata, {distance} AS distance"
        " FROM public.{partition} c ORDER BY {distance} LIMIT %(k)s)"
        " SELECT c.id, c.document_id, d.external_id, c.chunk_index, d.title, c.content,"
        " d.metadata || c.metadata, c.distance, {score} AS score, {score} >= %(threshold)s"
        " FROM candidates c JOIN public.datastore_documents d ON d.id = c.document_id"
        " ORDER BY score DESC, c.id"
    ).format(
        distance=distance,
        partition=sql.Identifier(partition_name(datastore.id)),
        score=score,
    )
    return query, {"q": vector, "k": k, "threshold": threshold}


def search(
    conn: psycopg.Connection,
    datastore: Datastore,
    vector: Vector,
    *,
    k: int,
    threshold: float,
    exact: bool,
) -> list[Candidate]:
    """Top-k chunks by the datastore's metric, best first, each flagged against the threshold.

    Must run inside a transaction: the planner settings are SET LOCAL.
    """
    if exact:
        conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
    else:
        # ef_search bounds how many rows HNSW can return: never below k.
        ef = max(datastore.config.hnsw.ef_search, k)
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(ef, 1000)),))
    query, params = build_query(datastore, vector, k, threshold)
    rows = conn.execute(query, params).fetchall()
    return [
        Candidate(
            hit=Hit(
                datastore_id=datastore.id,
                document_id=UUID(str(r[1])),
                external_id=r[2],
                chunk_id=int(r[0]),
                chunk_index=int(r[3]),
                title=r[4],
                content=r[5],
                metadata=r[6] or {},
                score=float(r[8]),
                distance=float(r[7]),
            ),
            passes=bool(r[9]),
        )
        for r in rows
    ]
