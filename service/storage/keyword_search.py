"""Keyword search: BM25 over each chunk's tsvector, ranked inside PostgreSQL, on the
keyword index and statistics that :mod:`service.storage.keyword` keeps per partition.

A query's terms are the distinct lexemes of ``to_tsvector(config, text)``, so they
are stemmed exactly like the chunks; any text parses, and operators or quotes in it
are ordinary characters. Terms are OR-ed: a chunk matching any term is a candidate
and BM25 ranks them, so chunks holding every term come first without AND semantics
emptying the result when no chunk holds them all.

    score = sum over query terms t in the chunk of
            idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_length))
    idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

with tf the number of positions of t in the chunk's tsvector (PostgreSQL keeps at
most 256 per lexeme), length its total positions, N the datastore's chunk count and
n(t) the chunks holding t.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import psycopg
from psycopg import sql
from psycopg.rows import RowFactory, namedtuple_row

from service import scoring
from service.models import Datastore, Vector
from service.query_models import Candidate
from service.storage.filters import Compiled
from service.storage.partitions import partition_name
from service.storage.vector_search import ChunkRow, Pending, chunk_hit, distance_sql


class KeywordRow(ChunkRow, Protocol):
    @property
    def score(self) -> float: ...  # BM25
    @property
    def distance(self) -> float | None: ...  # the vector distance, with a query vector


# psycopg's named tuples, typed by the columns they name.
_ROWS = cast("RowFactory[KeywordRow]", namedtuple_row)


# A lexeme as a tsquery operand: quoted, with quotes and backslashes escaped, so the
# tsquery parser takes it verbatim whatever characters it holds.
OPERAND_SQL = "'''' || replace(replace(t.lexeme, '\\', '\\\\'), '''', '''''') || ''''"


def build_query(
    datastore: Datastore,
    text: str,
    k: int,
    *,
    where: Compiled | None = None,
    vector: Vector | None = None,
) -> tuple[sql.Composed, dict[str, Any]]:
    """The BM25 SQL and its parameters. With ``vector``, rows also carry the vector distance."""
    partition = sql.Identifier(partition_name(datastore.id))
    filtered: sql.Composable = sql.SQL("")
    if where is not None:
        filtered = sql.SQL(
            " JOIN public.datastore_documents d ON d.id = c.document_id WHERE {}"
        ).format(where.condition)
    distance: sql.Composable = sql.SQL("NULL::float8")
    if vector is not None:
        distance = distance_sql(datastore)
    query = sql.SQL(
        "WITH terms AS MATERIALIZED ("
        " SELECT t.lexeme,"
        "  ln(1 + (s.chunk_count - t.chunk_freq + 0.5)::float8 / (t.chunk_freq + 0.5)) AS idf,"
        "  " + OPERAND_SQL + " AS operand"
        " FROM public.datastore_keyword_stats s"
        " JOIN public.datastore_keyword_terms t ON t.datastore_id = s.datastore_id"
        " WHERE s.datastore_id = %(ds)s"
        "  AND t.lexeme = ANY (tsvector_to_array(to_tsvector(%(cfg)s::regconfig, %(text)s)))),"
        " query AS MATERIALIZED ("
        " SELECT array_agg(lexeme) AS lexemes, string_agg(operand, ' | ')::tsquery AS tsq"
        " FROM terms),"
        " lengths AS MATERIALIZED ("
        " SELECT s.token_count::float8 / greatest(s.chunk_count, 1) AS average"
        " FROM public.datastore_keyword_stats s WHERE s.datastore_id = %(ds)s),"
        " matches AS MATERIALIZED ("
        " SELECT c.id, c.tsv, c.tsv_length FROM public.{partition} c{filtered}"
        " {glue} c.tsv @@ (SELECT tsq FROM query)),"
        " scored AS MATERIALIZED ("
        " SELECT m.id, sum(t.idf * u.tf * (%(k1)s + 1)"
        "  / (u.tf + %(k1)s * (1 - %(b)s + %(b)s * m.tsv_length / l.average))) AS score"
        " FROM matches m CROSS JOIN query q CROSS JOIN lengths l"
        " CROSS JOIN LATERAL ("
        "  SELECT f.lexeme, coalesce(array_length(f.positions, 1), 1) AS tf"
        "  FROM unnest(ts_filter(setweight(m.tsv, 'A', q.lexemes), '{{a}}')) f) u"
        " JOIN terms t ON t.lexeme = u.lexeme"
        " GROUP BY m.id ORDER BY score DESC, m.id LIMIT %(k)s)"
        " SELECT c.id, c.document_id, d.external_id, c.chunk_index, d.title, c.content,"
        " d.metadata || c.metadata AS metadata, s.score, {distance} AS distance"
        " FROM scored s"
        " JOIN public.{partition} c ON c.datastore_id = %(ds)s AND c.id = s.id"
        " JOIN public.datastore_documents d ON d.id = c.document_id"
        " ORDER BY s.score DESC, c.id"
    ).format(
        partition=partition,
        filtered=filtered,
        glue=sql.SQL("AND" if where is not None else "WHERE"),
        distance=distance,
    )
    params: dict[str, Any] = {
        "ds": datastore.id,
        "cfg": datastore.config.text_search_config,
        "text": text,
        "k": k,
        "k1": datastore.config.bm25_k1,
        "b": datastore.config.bm25_b,
    }
    if vector is not None:
        params["q"] = vector
    if where is not None:
        params.update(where.params)
    return query, params


def submit(
    conn: psycopg.Connection,
    datastore: Datastore,
    text: str,
    *,
    k: int,
    where: Compiled | None = None,
    vector: Vector | None = None,
    threshold: float = 0.0,
) -> Pending:
    """Queue a top-k search by BM25 (every chunk matching the filter is scored); the
    result collects its candidates, best first (see :func:`vector_search.submit`).

    Hits carry the BM25 score as ``score`` and ``keyword_score``. With ``vector``
    they also carry the vector distance and score, and ``passes`` compares that
    score with ``threshold``; without it every hit passes (distance 0).
    """
    query, params = build_query(datastore, text, k, where=where, vector=vector)
    rows = conn.cursor(row_factory=_ROWS).execute(query, params)

    def collect() -> list[Candidate]:
        out = []
        for r in rows.fetchall():
            bm25 = float(r.score)
            distance = None if r.distance is None else float(r.distance)
            vscore = None if distance is None else scoring.score(datastore.metric, distance)
            hit = chunk_hit(
                datastore,
                r,
                score=bm25,
                distance=0.0 if distance is None else distance,
                vector_score=vscore,
                keyword_score=bm25,
            )
            out.append(Candidate(hit=hit, passes=vscore is None or vscore >= threshold))
        return out

    return collect
