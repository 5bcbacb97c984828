"""What a query may cost: exact search's reach and the response's byte budget."""

from __future__ import annotations

import dataclasses
import json

from service.errors import ResourceExhausted
from service.models import Datastore, Hit, Principal, QueryResult
from service.storage import sizes
from service.storage.database import Database

# Bytes a hit costs beyond its text fields: ids, scores, field tags (a generous bound).
_HIT_OVERHEAD = 160


def hit_bytes(hit: Hit) -> int:
    """An upper estimate of ``hit``'s encoded size."""
    metadata = json.dumps(hit.metadata, separators=(",", ":")) if hit.metadata else ""
    return (
        _HIT_OVERHEAD
        + len(hit.external_id.encode())
        + len(hit.title.encode())
        + len(hit.content.encode())
        + 2 * len(metadata.encode())  # a Struct encodes each value with its type tag
    )


def fit_response(result: QueryResult, budget: int) -> QueryResult:
    """``result`` with the best hits that fit ``budget`` bytes; ``truncated`` if any was cut.

    The budget holds even for one hit: a caller may get no hits and ``truncated``.
    """
    used = sum(200 for _ in result.reports)
    for i, hit in enumerate(result.hits):
        used += hit_bytes(hit)
        if used > budget:
            return dataclasses.replace(result, hits=result.hits[:i], truncated=True)
    return result


def check_exact(
    db: Database, principal: Principal, datastores: list[Datastore], limit: int
) -> None:
    """Exact search reads every chunk: users may run it on datastores up to ``limit`` chunks."""
    if principal.is_service:
        return
    with db.autocommit() as conn:
        for datastore in datastores:
            if sizes.chunks_over(conn, datastore.id, limit):
                raise ResourceExhausted(
                    f"exact search is limited to datastores of at most {limit} chunks for user "
                    f"credentials; datastore {datastore.id} is larger: search it approximately "
                    "(exact = false) or with a service credential"
                )
