"""Metadata filters: operators, validation with the offending path, and filtered queries
that still return min(k, matching) hits with recall >= 0.95 against exact search."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from service import metadata_filter
from service.app import App
from service.client import Client, connect, pb
from service.models import Role
from service.storage import datastores as datastore_rows
from service.storage import vector_search
from service.storage.filters import compile_filter
from service.storage.partitions import index_name
from tests.helpers.rpc import status_of, struct, vector_datastore


def query(
    client: Client,
    ds_id: str,
    where: dict[str, Any],
    mode: int,
    *,
    exact: bool = False,
    k: int = 100,
) -> pb.QueryResponse:
    request = pb.QueryRequest(
        datastores=pb.DatastoreIds(ids=[ds_id]),
        filter=struct(where),
        mode=mode,  # type: ignore[arg-type]
        max_results=k,
        exact=exact,
    )
    if mode == pb.KEYWORD:
        request.text = "common"
    else:
        request.vector.values.extend([1.0, 0.0])
    return client.retrieval.Query(request)


# Each document has one chunk; "c" lists chunk metadata that overrides the document's.
DOCS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "d1": ({"year": 2019, "lang": "en", "tag": "a", "score": 0.5}, {}),
    "d2": ({"year": 2021, "lang": "de", "tag": "b"}, {"lang": "en"}),
    "d3": ({"year": 2023, "lang": "fr", "draft": True, "tag": "c"}, {}),
    "d4": ({"year": "2020", "lang": "en"}, {"tag": "a"}),
    "d5": ({"lang": None}, {"year": 2022}),
    "d6": ({}, {}),
}


@pytest.fixture(scope="module")
def filtered(app: App, target: str) -> Iterator[tuple[Client, str]]:
    user = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    client = connect(target, app.identity.create_key(user, Role.USER).key)
    ds = vector_datastore(client, pb.EUCLIDEAN, 2)
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[
                pb.DocumentInput(
                    external_id=ext,
                    metadata=struct(doc_meta),
                    chunks=[
                        pb.ChunkInput(
                            content=f"common words {ext}",
                            vector=[1.0, float(i)],
                            metadata=struct(chunk_meta),
                        )
                    ],
                )
                for i, (ext, (doc_meta, chunk_meta)) in enumerate(DOCS.items())
            ],
        )
    )
    yield client, ds.id
    client.close()


CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"lang": "en"}, {"d1", "d2", "d4"}),  # d2: the chunk's value wins
    ({"lang": {"$eq": "de"}}, set()),
    ({"lang": {"$ne": "en"}}, {"d3", "d5", "d6"}),  # missing or null fields included
    ({"lang": None}, {"d5"}),
    ({"year": {"$gt": 2020}}, {"d2", "d3", "d5"}),  # the string "2020" is not a number
    ({"year": {"$gte": 2021, "$lt": 2023}}, {"d2", "d5"}),
    ({"year": {"$lte": 2019}}, {"d1"}),
    ({"year": {"$gte": "2000"}}, {"d4"}),  # strings compare with strings only
    ({"year": 2019.0}, {"d1"}),
    ({"score": {"$lt": 1}}, {"d1"}),
    ({"tag": {"$in": ["a", "c"]}}, {"d1", "d3", "d4"}),
    ({"tag": {"$nin": ["a", "c"]}}, {"d2", "d5", "d6"}),
    ({"tag": {"$in": []}}, set()),
    ({"draft": True}, {"d3"}),
    ({"draft": {"$exists": True}}, {"d3"}),
    ({"year": {"$exists": False}}, {"d6"}),
    ({"$or": [{"lang": "fr"}, {"tag": "b"}]}, {"d2", "d3"}),
    ({"$and": [{"lang": "en"}, {"tag": "a"}]}, {"d1", "d4"}),
    ({"$not": {"lang": "en"}}, {"d3", "d5", "d6"}),
    ({"year": {"$not": {"$gt": 2020}}}, {"d1", "d4", "d6"}),
    ({"lang": "en", "$or": [{"year": 2019}, {"year": "2020"}]}, {"d1", "d4"}),
    ({"'; DROP TABLE datastore_chunks; --": "x"}, set()),
    ({"lang": "en' OR '1'='1"}, set()),
]


@pytest.mark.parametrize(("where", "expected"), CASES, ids=[str(c[0]) for c in CASES])
@pytest.mark.parametrize(
    ("mode", "exact"),
    [(pb.VECTOR, False), (pb.VECTOR, True), (pb.KEYWORD, False)],
    ids=["hnsw", "exact", "keyword"],
)
def test_operators(
    filtered: tuple[Client, str], where: dict[str, Any], expected: set[str], mode: int, exact: bool
) -> None:
    client, ds_id = filtered
    got = query(client, ds_id, where, mode, exact=exact)
    assert {h.external_id for h in got.hits} == expected
    assert not any(h.below_threshold for h in got.hits)


def test_hits_report_merged_metadata(filtered: tuple[Client, str]) -> None:
    client, ds_id = filtered
    got = query(client, ds_id, {"tag": "b"}, pb.VECTOR)
    [hit] = got.hits
    assert dict(hit.metadata) == {"year": 2021, "lang": "en", "tag": "b"}


BAD: list[tuple[dict[str, Any], str]] = [
    ({"year": {"$foo": 1}}, "filter.year.$foo: unknown operator"),
    ({"$nope": 1}, "filter.$nope: unknown operator"),
    ({"$or": {"a": 1}}, "filter.$or: expected a list"),
    ({"$or": []}, "filter.$or: expected a non-empty list"),
    ({"$and": [{"a": 1}, 5]}, "filter.$and[1]: expected an object"),
    ({"$and": [{"a": {"$in": [1, {"x": 1}]}}]}, "filter.$and[0].a.$in[1]: expected a string"),
    ({"year": {"$gt": True}}, "filter.year.$gt: expected a number or a string"),
    ({"year": {"$lte": None}}, "filter.year.$lte: expected a number or a string"),
    ({"year": {"$in": 5}}, "filter.year.$in: expected a list"),
    ({"year": [1, 2]}, "filter.year: a list is not a value to compare; use $in"),
    ({"year": {}}, "filter.year: empty object"),
    ({"year": {"$exists": "yes"}}, "filter.year.$exists: expected true or false"),
    ({"$not": 3}, "filter.$not: expected an object"),
    ({"a\x00b": 1}, "field name contains a NUL"),
    ({"a": "x\x00"}, "filter.a: contains a NUL"),
    ({"a": "x" * 5000}, "filter.a: strings are at most"),
    ({"k" * 300: 1}, "field name longer than"),
    ({"a": {"$in": list(range(2000))}}, "filter.a.$in: at most 1024 items"),
]


@pytest.mark.parametrize(("where", "fragment"), BAD, ids=[b[1][:40] for b in BAD])
def test_malformed_filters_are_invalid_argument_with_the_path(
    filtered: tuple[Client, str], where: dict[str, Any], fragment: str
) -> None:
    client, ds_id = filtered
    code, msg = status_of(lambda: query(client, ds_id, where, pb.VECTOR))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in msg


# ---------------------------------------------------------------- selectivity

DIMS = 16
SELECTIVITY = {"50%": 500, "5%": 50, "0.1%": 1}  # bucket < this, buckets 0..999


@pytest.fixture(
    scope="module",
    params=[3_000, pytest.param(20_000, marks=pytest.mark.slow)],
    ids=lambda n: f"{n}chunks",
)
def selectivity_store(
    request: pytest.FixtureRequest, app: App, target: str
) -> Iterator[tuple[Client, str, np.ndarray]]:
    """n single-chunk documents, random vectors, document metadata bucket = i % 1000.

    At 20,000 chunks even the 0.1% filter matches more than k.
    """
    n: int = request.param
    user = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    client = connect(target, app.identity.create_key(user, Role.USER).key)
    ds = vector_datastore(client, pb.EUCLIDEAN, DIMS, max_results=10)
    rng = np.random.default_rng(42)
    vectors = rng.normal(size=(n, DIMS)).astype(np.float32)
    for start in range(0, n, 1000):
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=ds.id,
                documents=[
                    pb.DocumentInput(
                        external_id=f"v{i}",
                        metadata=struct({"bucket": i % 1000, "even": i % 2 == 0}),
                        chunks=[pb.ChunkInput(content=f"chunk {i}", vector=vectors[i].tolist())],
                    )
                    for i in range(start, min(start + 1000, n))
                ],
            )
        )
    yield client, ds.id, vectors
    client.close()


@pytest.mark.parametrize("selectivity", list(SELECTIVITY))
@pytest.mark.parametrize("k", [10, 40])
def test_filtered_queries_return_min_k_matching_with_high_recall(
    selectivity_store: tuple[Client, str, np.ndarray], selectivity: str, k: int
) -> None:
    client, ds_id, vectors = selectivity_store
    n = len(vectors)
    where = {"bucket": {"$lt": SELECTIVITY[selectivity]}}
    matching = n * SELECTIVITY[selectivity] // 1000
    rng = np.random.default_rng(k)
    recalls = []
    for _ in range(20):
        q = rng.normal(size=DIMS).astype(np.float32)
        kwargs: dict[str, Any] = {
            "datastores": pb.DatastoreIds(ids=[ds_id]),
            "vector": pb.QueryVector(values=q.tolist()),
            "filter": struct(where),
            "max_results": k,
            "similarity_threshold": 0.0,
        }
        ann = client.retrieval.Query(pb.QueryRequest(**kwargs))
        exact = client.retrieval.Query(pb.QueryRequest(**kwargs, exact=True))
        assert len(ann.hits) == min(k, matching)
        assert len(exact.hits) == min(k, matching)
        # exact search is the ground truth: check it against numpy too
        rows = np.array([i for i in range(n) if i % 1000 < SELECTIVITY[selectivity]])
        order = rows[np.argsort(np.linalg.norm(vectors[rows] - q, axis=1), kind="stable")]
        assert {h.external_id for h in exact.hits} == {f"v{i}" for i in order[:k]}
        got = {h.external_id for h in ann.hits}
        truth = {h.external_id for h in exact.hits}
        recalls.append(len(got & truth) / len(truth))
    assert float(np.mean(recalls)) >= 0.95, recalls


def test_a_filtered_query_walks_the_hnsw_index(
    app: App, selectivity_store: tuple[Client, str, np.ndarray]
) -> None:
    """The filter sits under the datastore's HNSW scan (which iterates), not after it."""
    _, ds_id, vectors = selectivity_store
    tree = metadata_filter.parse({"bucket": {"$lt": 500}})
    assert tree is not None
    with app.db.connection() as conn:
        datastore = datastore_rows.get(conn, uuid.UUID(ds_id))
        assert datastore is not None
        conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        query, params = vector_search.build_query(
            datastore, vectors[0], 10, 0.0, compile_filter(tree)
        )
        plan = "\n".join(
            r[0] for r in conn.execute(b"EXPLAIN " + query.as_bytes(conn), params).fetchall()
        )
    assert f"Index Scan using {index_name(uuid.UUID(ds_id))}" in plan
