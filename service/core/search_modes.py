"""One datastore's search in the requested mode: vector, keyword (BM25) or hybrid (RRF)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.core.fusion import reciprocal_rank_fusion
from service.models import Datastore, SearchMode, Vector
from service.storage import keyword, search
from service.storage.filters import Compiled
from service.storage.search import Pending

if TYPE_CHECKING:  # the core passes connections through; it never uses the driver
    import psycopg


@dataclass(frozen=True)
class DatastoreSearch:
    """What to search in one datastore; ``k`` candidates come back, best first."""

    datastore: Datastore
    mode: SearchMode
    k: int
    threshold: float
    exact: bool
    text: str | None
    vector: Vector | None
    where: Compiled | None
    hybrid_candidates: int  # the least each side of a hybrid search contributes


def submit(conn: psycopg.Connection, s: DatastoreSearch) -> Pending:
    """Queue one datastore's search; the result collects its candidates, flagged
    against the threshold (vector score; keyword mode has none).

    Hybrid takes max(k, hybrid_candidates) candidates from each side, both under the
    metadata filter, and fuses them with Reciprocal Rank Fusion; every fused hit
    carries its vector score, which is what the threshold applies to. Both sides are
    queued before either is collected, so in a pipeline they share one round trip.
    """
    if s.mode is SearchMode.KEYWORD:
        assert s.text is not None
        return keyword.submit(conn, s.datastore, s.text, k=s.k, where=s.where)
    assert s.vector is not None
    if s.mode is SearchMode.VECTOR:
        return search.submit(
            conn,
            s.datastore,
            s.vector,
            k=s.k,
            threshold=s.threshold,
            exact=s.exact,
            where=s.where,
        )
    assert s.text is not None
    depth = max(s.k, s.hybrid_candidates)
    dense = search.submit(
        conn, s.datastore, s.vector, k=depth, threshold=s.threshold, exact=s.exact, where=s.where
    )
    sparse = keyword.submit(
        conn,
        s.datastore,
        s.text,
        k=depth,
        where=s.where,
        vector=s.vector,
        threshold=s.threshold,
    )
    return lambda: reciprocal_rank_fusion(dense(), sparse(), s.datastore.config.rrf_k)
