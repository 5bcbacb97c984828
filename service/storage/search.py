"""Nearest-neighbour search in one datastore's partition.

The ANN scan takes the top-k by distance in a MATERIALIZED CTE; the threshold is
applied by the outer query on the score the caller sees, never under the index
scan (which would silently cap results at ef_search). A metadata filter does go
under the scan, with pgvector's iterative index scan (see :func:`search`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from service import scoring
from service.models import Datastore, Hit, Vector
from service.storage.filters import Compiled
from service.storage.partitions import embedding_expr, partition_name


@dataclass(frozen=True)
class Candidate:
    hit: Hit
    passes: bool  # score >= threshold


def distance_sql(datastore: Datastore) -> sql.Composable:
    """The datastore's distance between a chunk ``c`` and the parameter ``%(q)s``."""
    dims = datastore.config.dimensions
    kind = scoring.index_type(dims) or "vector"
    return sql.SQL("{} {} %(q)s::{}({})").format(
        embedding_expr(dims),
        sql.SQL(scoring.OPERATORS[datastore.metric]),
        sql.SQL(kind),
        sql.Literal(dims),
    )


def build_query(
    datastore: Datastore,
    vector: Vector,
    k: int,
    threshold: float,
    where: Compiled | None = None,
) -> tuple[sql.Composed, dict[str, Any]]:
    """The search SQL and its parameters (exposed so tests can EXPLAIN it).

    ``where`` (a metadata filter over the chunk ``c`` and its document ``d``) goes
    under the index scan, which pgvector's iterative scan then keeps feeding.
    """
    distance = distance_sql(datastore)
    score = sql.SQL(scoring.score_sql(datastore.metric, "c.distance"))
    filtered: sql.Composable = sql.SQL("")
    if where is not None:
        filtered = sql.SQL(
            " JOIN public.datastore_documents d ON d.id = c.document_id WHERE {}"
        ).format(where.condition)
    query = sql.SQL(
        "WITH candidates AS MATERIALIZED ("
        " SELECT c.id, c.document_id, c.chunk_index, c.content, c.metadata, {distance} AS distance"
        " FROM public.{partition} c{filtered} ORDER BY {distance} LIMIT %(k)s)"
        " SELECT c.id, c.document_id, d.external_id, c.chunk_index, d.title, c.content,"
        " d.metadata || c.metadata, c.distance, {score} AS score, {score} >= %(threshold)s"
        " FROM candidates c JOIN public.datastore_documents d ON d.id = c.document_id"
        " ORDER BY score DESC, c.id"
    ).format(
        distance=distance,
        partition=sql.Identifier(partition_name(datastore.id)),
        filtered=filtered,
        score=score,
    )
    params = {"q": vector, "k": k, "threshold": threshold}
    if where is not None:
        params.update(where.params)
    return query, params


def search(
    conn: psycopg.Connection,
    datastore: Datastore,
    vector: Vector,
    *,
    k: int,
    threshold: float,
    exact: bool,
    where: Compiled | None = None,
) -> list[Candidate]:
    """Top-k chunks by the datastore's metric, best first, each flagged against the threshold.

    With a filter, the HNSW scan is iterative (it keeps walking the graph until k
    chunks pass the filter); when it still comes back short, which happens when the
    filter is very selective, the search is repeated exactly, so a filtered search
    returns min(k, matching chunks). Must run inside a transaction: the planner
    settings are SET LOCAL.
    """
    if exact:
        return _run(conn, datastore, vector, k=k, threshold=threshold, where=where, exact=True)
    # ef_search bounds how many rows one HNSW pass returns: never below k.
    ef = max(datastore.config.hnsw.ef_search, k)
    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(ef, 1000)),))
    if where is None:
        return _run(conn, datastore, vector, k=k, threshold=threshold, where=None, exact=False)
    for name, value in _iterative_scan(_chunk_count(conn, datastore.id)).items():
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))
    found = _run(conn, datastore, vector, k=k, threshold=threshold, where=where, exact=False)
    if len(found) < k:
        found = _run(conn, datastore, vector, k=k, threshold=threshold, where=where, exact=True)
    return found


# Measured (10k chunks, 16 dims): a tuple visited by the iterative HNSW scan costs
# about ten times a row of the exact (sequential) filtered scan. So the HNSW scan
# may visit a tenth of the chunks before the exact scan, which is cheaper for a
# filter that selective, takes over: at worst about twice an exact search.
_MIN_SCAN_TUPLES = 2_000
_MAX_SCAN_TUPLES = 100_000


def _iterative_scan(chunks: int) -> dict[str, str]:
    budget = min(max(chunks // 10, _MIN_SCAN_TUPLES), _MAX_SCAN_TUPLES)
    return {
        # relaxed_order returns rows slightly out of order; the outer query re-sorts them
        "hnsw.iterative_scan": "relaxed_order",
        "hnsw.max_scan_tuples": str(budget),
        "hnsw.scan_mem_multiplier": "2",
    }


def _chunk_count(conn: psycopg.Connection, datastore_id: UUID) -> int:
    """The datastore's chunk count (kept exact by the keyword statistics triggers)."""
    row = conn.execute(
        "SELECT chunk_count FROM public.datastore_keyword_stats WHERE datastore_id = %s",
        (datastore_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def _run(
    conn: psycopg.Connection,
    datastore: Datastore,
    vector: Vector,
    *,
    k: int,
    threshold: float,
    where: Compiled | None,
    exact: bool,
) -> list[Candidate]:
    if exact:
        conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
    query, params = build_query(datastore, vector, k, threshold, where)
    rows = conn.execute(query, params).fetchall()
    if exact:  # later searches in this transaction (other datastores) may use indexes
        conn.execute("SELECT set_config('enable_indexscan', 'on', true)")
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
                vector_score=float(r[8]),
            ),
            passes=bool(r[9]),
        )
        for r in rows
    ]
