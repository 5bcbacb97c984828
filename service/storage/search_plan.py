"""A query's searches, run together: one storage call, one round trip to the database.

The core describes each search (:class:`VectorSearch`, :class:`KeywordSearch`) and gets
their candidates back; how they reach the server (pipeline mode, the session or
transaction settings, the driver's errors turned into the service's) stays here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from service.models import Datastore, Vector
from service.query_models import Candidate
from service.storage import keyword_search, vector_search
from service.storage.database import Connection, Database
from service.storage.filters import Compiled
from service.storage.vector_search import Pending


# Named tuples, not dataclasses: built on every query, a tuple is several times cheaper.
class VectorSearch(NamedTuple):
    """Top-``k`` chunks by the datastore's metric, flagged against ``threshold``."""

    datastore: Datastore
    vector: Vector
    k: int
    threshold: float
    exact: bool = False
    where: Compiled | None = None


class KeywordSearch(NamedTuple):
    """Top-``k`` chunks by BM25. With ``vector`` (hybrid's keyword side) the hits also
    carry the vector score, flagged against ``threshold``; without it every hit passes."""

    datastore: Datastore
    text: str
    k: int
    where: Compiled | None = None
    vector: Vector | None = None
    threshold: float = 0.0


Search = VectorSearch | KeywordSearch


def run(db: Database, searches: Sequence[Search]) -> list[list[Candidate]]:
    """Each search's candidates, best first, in the order of ``searches``.

    A lone unfiltered approximate vector search (the common agent query) is its search
    statement alone on an autocommit connection (:func:`vector_search.search_alone`).
    Anything else is queued on one connection in autocommit pipeline mode and sent in
    one round trip, every search before any is collected (a short filtered search adds
    one round trip: see :func:`vector_search.submit`).
    """
    if len(searches) == 1:
        only = searches[0]
        if isinstance(only, VectorSearch) and only.where is None and not only.exact:
            with db.autocommit() as conn:
                return [
                    vector_search.search_alone(
                        conn, only.datastore, only.vector, k=only.k, threshold=only.threshold
                    )
                ]
    with db.pipeline() as (conn, pipeline):
        pending = [_submit(conn, s) for s in searches]
        pipeline.sync()
        return [collect() for collect in pending]


def _submit(conn: Connection, s: Search) -> Pending:
    if isinstance(s, VectorSearch):
        return vector_search.submit(
            conn, s.datastore, s.vector, k=s.k, threshold=s.threshold, exact=s.exact, where=s.where
        )
    return keyword_search.submit(
        conn, s.datastore, s.text, k=s.k, where=s.where, vector=s.vector, threshold=s.threshold
    )
