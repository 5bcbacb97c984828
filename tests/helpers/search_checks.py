"""Search checks shared by test modules: EXPLAIN of the query path's SQL, and numpy's
reference distances and scores for every metric."""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np

from service.app import App
from service.client import pb
from service.storage import datastores as datastore_rows
from service.storage import vector_search


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += plan_nodes(child)
    return out


def explain_search(
    app: App,
    ds_id: str,
    generic: bool,
    *,
    forbid_seqscan: bool = False,
    dims: int = 32,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """EXPLAIN the exact SQL and settings the query path runs."""
    with app.db.connection() as conn:
        datastore = datastore_rows.get(conn, uuid.UUID(ds_id))
        assert datastore is not None
        if forbid_seqscan:
            conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SELECT set_config('hnsw.ef_search', '100', true)")
        vector = np.ones(dims, dtype=np.float32)
        query, params = vector_search.build_query(datastore, vector, 10, 0.5, exact=exact)
        if generic:
            # The plan a prepared statement may settle on: planned once for any
            # parameter values, which appear as $1, $2, ...
            text = query.as_string(conn)
            for number, name in enumerate(params, start=1):
                text = text.replace(f"%({name})s", f"${number}")
            row = conn.execute(f"EXPLAIN (GENERIC_PLAN, FORMAT JSON) {text}".encode()).fetchone()
        else:
            row = conn.execute(b"EXPLAIN (FORMAT JSON) " + query.as_bytes(conn), params).fetchone()
    assert row is not None
    doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return plan_nodes(doc[0]["Plan"])


def reference(metric: int, docs: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, score) per document, computed as pgvector's operators and the score table."""
    d64, q64 = docs.astype(np.float64), q.astype(np.float64)
    if metric == pb.COSINE:
        dist = 1 - (d64 @ q64) / (np.linalg.norm(d64, axis=1) * np.linalg.norm(q64))
        return dist, 1 - dist
    if metric == pb.DOT:
        dist = -(d64 @ q64)
        return dist, -dist
    if metric == pb.EUCLIDEAN:
        dist = np.linalg.norm(d64 - q64, axis=1)
    else:
        dist = np.abs(d64 - q64).sum(axis=1)
    return dist, 1 / (1 + dist)
