"""Nearest-neighbour search in one datastore's partition.

The ANN scan takes the top-k by distance in a MATERIALIZED CTE; the threshold is
applied by the outer query on the score the caller sees, never under the index
scan (which would silently cap results at ef_search). A metadata filter does go
under the scan, with pgvector's iterative index scan (see :func:`submit`).

A float16 datastore's scan orders by the halfvec expression its index is built on;
every distance and score is still computed on the stored float32 vector.

Every search row (this module's and :mod:`keyword_search`'s, which builds on it) starts
with the :class:`ChunkRow` columns and becomes a :class:`Candidate` by
:func:`chunk_hit`. Rows come as ``namedtuple_row`` tuples, read by column name.
Measured over 1,000 rows of a search's columns: ``class_row`` into a dataclass costs
about 6 µs a row more than plain tuples (fetch ~35% slower); ``namedtuple_row`` under
1 µs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol, cast
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import RowFactory, namedtuple_row

from service import scoring
from service.models import Datastore, JsonObject, Vector
from service.query_models import Candidate, Hit
from service.storage.filters import Compiled
from service.storage.partitions import embedding_expr, partition_name, stored_expr

# What collects a queued search's rows: calling it waits for the server's answer.
Pending = Callable[[], list[Candidate]]


class ChunkRow(Protocol):
    """The columns every search row starts with."""

    @property
    def id(self) -> int: ...
    @property
    def document_id(self) -> UUID: ...
    @property
    def external_id(self) -> str: ...
    @property
    def chunk_index(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def metadata(self) -> JsonObject | None: ...


def chunk_hit(
    datastore: Datastore,
    row: ChunkRow,
    *,
    score: float,
    distance: float,
    vector_score: float | None,
    keyword_score: float | None = None,
) -> Hit:
    """A hit from a search row."""
    return Hit(
        datastore_id=datastore.id,
        document_id=UUID(str(row.document_id)),
        external_id=row.external_id,
        chunk_id=int(row.id),
        chunk_index=int(row.chunk_index),
        title=row.title,
        content=row.content,
        metadata=row.metadata or {},
        score=score,
        distance=distance,
        vector_score=vector_score,
        keyword_score=keyword_score,
    )


class VectorRow(ChunkRow, Protocol):
    @property
    def distance(self) -> float: ...
    @property
    def score(self) -> float: ...
    @property
    def passes(self) -> bool: ...


# psycopg's named tuples, typed by the columns they name.
_ROWS = cast("RowFactory[VectorRow]", namedtuple_row)


def distance_sql(datastore: Datastore) -> sql.Composable:
    """The datastore's distance between a chunk ``c`` and the parameter ``%(q)s``, on the
    stored float32 vectors: what scores, thresholds and exact search use."""
    dims = datastore.config.dimensions
    return sql.SQL("{} {} %(q)s::vector({})").format(
        stored_expr(dims), sql.SQL(scoring.OPERATORS[datastore.metric]), sql.Literal(dims)
    )


def index_distance_sql(datastore: Datastore) -> sql.Composable:
    """The same distance over the indexed expression, which the ANN scan orders by: the
    index serves only an ORDER BY written as its own expression and operator class."""
    dims = datastore.config.dimensions
    precision = datastore.config.vector_precision
    kind = scoring.index_type(dims, precision) or "vector"
    return sql.SQL("{} {} %(q)s::{}({})").format(
        embedding_expr(dims, precision),
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
    *,
    exact: bool = False,
) -> tuple[sql.Composed, dict[str, Any]]:
    """The search SQL and its parameters (exposed so tests can EXPLAIN it).

    ``where`` (a metadata filter over the chunk ``c`` and its document ``d``) goes
    under the index scan, which pgvector's iterative scan then keeps feeding.

    ``k`` is written into the statement, not passed as a parameter: psycopg prepares
    a statement after a few runs and PostgreSQL then may plan it once for any
    parameters. Not knowing the LIMIT, that generic plan prices it at a tenth of the
    partition and, below a few thousand chunks, sorts the whole partition instead of
    walking the HNSW index (measured: 12 ms instead of 1 ms on 2,300 chunks).

    ``exact`` orders by ``distance + 0``, an expression no index can serve, so the
    scan is sequential in any plan. Turning ``enable_indexscan`` off instead is not
    enough: a prepared statement's cached generic plan keeps the index it was planned
    with, whatever the setting when it runs.
    """
    distance = distance_sql(datastore)
    score = sql.SQL(scoring.score_sql(datastore.metric, "c.distance"))
    filtered: sql.Composable = sql.SQL("")
    if where is not None:
        filtered = sql.SQL(
            " JOIN public.datastore_documents d ON d.id = c.document_id WHERE {}"
        ).format(where.condition)
    scan = sql.SQL(
        "SELECT c.id, c.document_id, c.chunk_index, c.content, c.metadata, {distance} AS distance"
        " FROM public.{partition} c{filtered}"
    ).format(
        distance=distance, partition=sql.Identifier(partition_name(datastore.id)), filtered=filtered
    )
    if exact:
        # OFFSET 0 keeps the subquery whole, so the distance is computed once per row.
        top = sql.SQL("SELECT * FROM ({} OFFSET 0) s ORDER BY s.distance + 0").format(scan)
    else:
        # A halfvec index ranks the candidates; each still carries its float32 distance.
        top = sql.SQL("{} ORDER BY {}").format(scan, index_distance_sql(datastore))
    query = sql.SQL(
        "WITH candidates AS MATERIALIZED ({top} LIMIT {k})"
        " SELECT c.id, c.document_id, d.external_id, c.chunk_index, d.title, c.content,"
        " d.metadata || c.metadata AS metadata, c.distance, {score} AS score,"
        " {score} >= %(threshold)s AS passes"
        " FROM candidates c JOIN public.datastore_documents d ON d.id = c.document_id"
        " ORDER BY score DESC, c.id"
    ).format(top=top, k=sql.Literal(int(k)), score=score)
    params = {"q": vector, "threshold": threshold}
    if where is not None:
        params.update(where.params)
    return query, params


# Each connection's session-level hnsw.ef_search, as set by ``search_alone``. Only
# that function sets it for the session; ``submit``'s SET LOCAL reverts to it at the
# end of its transaction, so the value recorded stays true for the connection's life.
_session_ef_search: weakref.WeakKeyDictionary[psycopg.Connection[Any], str] = (
    weakref.WeakKeyDictionary()
)


def _ef_search(datastore: Datastore, k: int) -> str:
    # ef_search bounds how many rows one HNSW pass returns: never below k.
    return str(min(max(datastore.config.hnsw.ef_search, k), 1000))


def submit(
    conn: psycopg.Connection,
    datastore: Datastore,
    vector: Vector,
    *,
    k: int,
    threshold: float,
    exact: bool,
    where: Compiled | None = None,
) -> Pending:
    """Queue a top-k search by the datastore's metric; the result collects its
    candidates, best first, each flagged against the threshold.

    The planner settings are SET LOCAL, for the statements that follow in the same
    transaction, explicit or (in autocommit pipeline mode) implicit up to the next
    Sync. Inside ``conn.pipeline()`` the settings and the search go out together: one
    round trip, shared with every other search queued before the pipeline's sync.

    With a filter, the HNSW scan is iterative (it keeps walking the graph until k
    chunks pass the filter); when it still comes back short, which happens when the
    filter is very selective, the search is repeated exactly, so a filtered search
    returns min(k, matching chunks).
    """
    if exact:
        rows = _queue(conn, datastore, vector, k=k, threshold=threshold, where=where, exact=True)
        return lambda: _candidates(datastore, rows.fetchall())
    ef = _ef_search(datastore, k)
    if where is None:
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (ef,))
        rows = _queue(conn, datastore, vector, k=k, threshold=threshold, where=None, exact=False)
        return lambda: _candidates(datastore, rows.fetchall())
    tuples = datastore.config.hnsw.iterative_scan_max_tuples or None  # 0: the rule below
    conn.execute(_ITERATIVE_SCAN_SQL, {"ef": ef, "ds": datastore.id, "tuples": tuples})
    rows = _queue(conn, datastore, vector, k=k, threshold=threshold, where=where, exact=False)

    def collect() -> list[Candidate]:
        found = _candidates(datastore, rows.fetchall())
        if len(found) < k:
            again = _queue(
                conn, datastore, vector, k=k, threshold=threshold, where=where, exact=True
            )
            found = _candidates(datastore, again.fetchall())
        return found

    return collect


def search_alone(
    conn: psycopg.Connection, datastore: Datastore, vector: Vector, *, k: int, threshold: float
) -> list[Candidate]:
    """One unfiltered HNSW search on an autocommit connection, outside a pipeline: the
    search statement alone, one round trip.

    ``hnsw.ef_search`` is set for the session instead of SET LOCAL, in its own
    (autocommitted) statement, only when the connection does not have the value yet:
    a pooled connection serving one datastore's queries sets it once. Measured next
    to the pipelined SET LOCAL + search: about 0.4 ms less per query.
    """
    assert conn.autocommit, "search_alone needs an autocommit connection"
    ef = _ef_search(datastore, k)
    if _session_ef_search.get(conn) != ef:
        conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (ef,))
        _session_ef_search[conn] = ef
    rows = _queue(conn, datastore, vector, k=k, threshold=threshold, where=None, exact=False)
    return _candidates(datastore, rows.fetchall())


# Measured (10k chunks, 16 dims): a tuple visited by the iterative HNSW scan costs
# about ten times a row of the exact (sequential) filtered scan. So the HNSW scan
# may visit a tenth of the chunks (at least 2,000, at most 100,000) before the
# exact scan, which is cheaper for a filter that selective, takes over: at worst
# about twice an exact search. The chunk count is kept exact by the keyword
# statistics triggers; reading it in the same statement saves a round trip.
# relaxed_order returns rows slightly out of order; the outer query re-sorts them.
# A datastore's config.hnsw.iterative_scan_max_tuples, when set, replaces that rule.
_ITERATIVE_SCAN_SQL = """
SELECT set_config('hnsw.ef_search', %(ef)s, true),
       set_config('hnsw.iterative_scan', 'relaxed_order', true),
       set_config('hnsw.scan_mem_multiplier', '2', true),
       set_config('hnsw.max_scan_tuples', coalesce(%(tuples)s::int::text,
                  (SELECT least(greatest(coalesce(max(chunk_count), 0) / 10, 2000), 100000)::text
                   FROM public.datastore_keyword_stats WHERE datastore_id = %(ds)s)),
                  true)
"""


def _queue(
    conn: psycopg.Connection,
    datastore: Datastore,
    vector: Vector,
    *,
    k: int,
    threshold: float,
    where: Compiled | None,
    exact: bool,
) -> psycopg.Cursor[VectorRow]:
    """Send (or, in a pipeline, queue) the search; its cursor yields the rows."""
    query, params = build_query(datastore, vector, k, threshold, where, exact=exact)
    return conn.cursor(row_factory=_ROWS).execute(query, params)


def _candidates(datastore: Datastore, rows: list[VectorRow]) -> list[Candidate]:
    return [
        Candidate(
            hit=chunk_hit(
                datastore,
                r,
                score=float(r.score),
                distance=float(r.distance),
                vector_score=float(r.score),
            ),
            passes=bool(r.passes),
        )
        for r in rows
    ]
