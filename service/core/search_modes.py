"""One datastore's search in the requested mode: vector, keyword (BM25) or hybrid (RRF)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from service.core.fusion import reciprocal_rank_fusion
from service.models import Datastore, SearchMode, Vector
from service.storage import search_plan
from service.storage.candidates import Candidate
from service.storage.database import Database
from service.storage.filters import Compiled
from service.storage.search_plan import KeywordSearch, Search, VectorSearch


class DatastoreSearch(NamedTuple):
    """What to search in one datastore; ``k`` candidates come back, best first (a named
    tuple: built for every datastore of every query, several times cheaper than a
    frozen dataclass)."""

    datastore: Datastore
    mode: SearchMode
    k: int
    threshold: float
    exact: bool
    text: str | None
    vector: Vector | None
    where: Compiled | None
    hybrid_candidates: int  # the least each side of a hybrid search contributes


def run(db: Database, requests: Sequence[DatastoreSearch]) -> list[list[Candidate]]:
    """Each datastore's candidates, best first, flagged against its threshold (vector
    score; keyword mode has none); every search of the query in one storage call.

    Hybrid takes max(k, hybrid_candidates) candidates from each side, both under the
    metadata filter, and fuses them with Reciprocal Rank Fusion; every fused hit
    carries its vector score, which is what the threshold applies to. Both sides go to
    the database with every other search of the query: one round trip.
    """
    searches: list[Search] = []
    for s in requests:
        searches.extend(_searches(s))
    found = iter(search_plan.run(db, searches))
    out = []
    for s in requests:
        if s.mode is SearchMode.HYBRID:
            dense, sparse = next(found), next(found)
            out.append(reciprocal_rank_fusion(dense, sparse, s.datastore.config.rrf_k))
        else:
            out.append(next(found))
    return out


def _searches(s: DatastoreSearch) -> tuple[Search, ...]:
    """The storage searches answering ``s``: hybrid's are (vector, keyword)."""
    if s.mode is SearchMode.KEYWORD:
        assert s.text is not None
        return (KeywordSearch(s.datastore, s.text, k=s.k, where=s.where),)
    assert s.vector is not None
    if s.mode is SearchMode.VECTOR:
        return (VectorSearch(s.datastore, s.vector, s.k, s.threshold, s.exact, s.where),)
    assert s.text is not None
    depth = max(s.k, s.hybrid_candidates)
    return (
        VectorSearch(s.datastore, s.vector, depth, s.threshold, s.exact, s.where),
        KeywordSearch(
            s.datastore, s.text, depth, where=s.where, vector=s.vector, threshold=s.threshold
        ),
    )
