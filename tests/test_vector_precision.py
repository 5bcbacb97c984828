"""config.vector_precision: float16 datastores search a halfvec index and score in float32."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2

from service.app import App
from service.client import Client, pb
from service.models import DatastoreConfig, VectorPrecision
from service.storage.partitions import index_name
from tests.helpers.rpc import ingest_vectors, query_vector, status_of
from tests.helpers.search_checks import explain_search, reference

DIMS = 32
ROWS = 2000
K = 10
OPCLASS: dict[int, str] = {
    pb.COSINE: "halfvec_cosine_ops",
    pb.DOT: "halfvec_ip_ops",
    pb.EUCLIDEAN: "halfvec_l2_ops",
    pb.MANHATTAN: "halfvec_l1_ops",
}
METRIC_IDS = ["cosine", "dot", "euclidean", "manhattan"]


def precise_datastore(
    client: Client, metric: int, precision: int, dims: int = DIMS, **config: object
) -> pb.Datastore:
    """A bring-your-own-vectors datastore of the given metric and precision."""
    return client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name="precision",
            similarity_metric=metric,  # type: ignore[arg-type]
            similarity_threshold=0.0,
            max_results=K,
            config=pb.DatastoreConfig(
                embedding_model="none",
                dimensions=dims,
                vector_precision=precision,  # type: ignore[arg-type]
                **config,  # type: ignore[arg-type]
            ),
        )
    )


def set_precision(client: Client, ds_id: str, precision: int) -> pb.Datastore:
    return client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=ds_id,
                config=pb.DatastoreConfig(vector_precision=precision),  # type: ignore[arg-type]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["config.vector_precision"]),
        )
    )


def index_definition(app: App, ds_id: str) -> str:
    with app.db.connection() as conn:
        row = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
            (index_name(uuid.UUID(ds_id)),),
        ).fetchone()
    assert row is not None
    return str(row[0])


def uses_index(app: App, ds_id: str) -> bool:
    # With sequential scans priced out, an index whose expression or operator class
    # did not match the query's ORDER BY would still leave a (disabled) Seq Scan.
    nodes = explain_search(app, ds_id, generic=False, forbid_seqscan=True)
    return index_name(uuid.UUID(ds_id)) in [n.get("Index Name") for n in nodes]


@pytest.mark.parametrize("metric", list(OPCLASS), ids=METRIC_IDS)
def test_float16_datastore_answers_with_float32_scores_from_its_halfvec_index(
    client: Client, app: App, metric: int
) -> None:
    rng = np.random.default_rng(200 + metric)
    docs = rng.normal(size=(ROWS, DIMS)).astype(np.float32)
    ds = precise_datastore(client, metric, pb.VECTOR_PRECISION_FLOAT16)
    assert ds.config.vector_precision == pb.VECTOR_PRECISION_FLOAT16
    ingest_vectors(client, ds.id, docs)
    definition = index_definition(app, ds.id)
    assert f"::halfvec({DIMS})" in definition and OPCLASS[metric] in definition
    assert uses_index(app, ds.id)
    overlaps = []
    for q in rng.normal(size=(5, DIMS)).astype(np.float32):
        dist, score = reference(metric, docs, q)
        expected = np.argsort(-score, kind="stable")[:K]
        exact = query_vector(client, [ds.id], q.tolist(), exact=True, similarity_threshold=0.0)
        # exact search reads the stored float32 vectors: numpy's order and scores
        assert [h.external_id for h in exact.hits] == [f"v{i}" for i in expected]
        ann = query_vector(client, [ds.id], q.tolist(), similarity_threshold=0.0)
        rows = [int(h.external_id[1:]) for h in ann.hits]
        # every hit the halfvec index finds is scored on its float32 vector
        np.testing.assert_allclose([h.score for h in ann.hits], score[rows], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose([h.distance for h in ann.hits], dist[rows], rtol=1e-5, atol=1e-5)
        assert [h.score for h in ann.hits] == sorted((h.score for h in ann.hits), reverse=True)
        overlaps.append(len(set(rows) & set(expected.tolist())) / K)
    assert np.mean(overlaps) >= 0.9


def test_changing_precision_rebuilds_the_index_and_keeps_the_answers(
    client: Client, app: App
) -> None:
    rng = np.random.default_rng(7)
    docs = rng.normal(size=(500, DIMS)).astype(np.float32)
    ds = precise_datastore(client, pb.EUCLIDEAN, pb.VECTOR_PRECISION_FLOAT32)
    ingest_vectors(client, ds.id, docs)
    assert "vector_l2_ops" in index_definition(app, ds.id)
    q = rng.normal(size=DIMS).astype(np.float32).tolist()
    before = query_vector(client, [ds.id], q, exact=True)

    updated = set_precision(client, ds.id, pb.VECTOR_PRECISION_FLOAT16)
    assert updated.config.vector_precision == pb.VECTOR_PRECISION_FLOAT16
    assert updated.config.dimensions == DIMS and updated.chunk_count == 500
    assert "halfvec_l2_ops" in index_definition(app, ds.id)
    assert uses_index(app, ds.id)
    after = query_vector(client, [ds.id], q, exact=True)
    assert [(h.chunk_id, h.score) for h in after.hits] == [
        (h.chunk_id, h.score) for h in before.hits
    ]

    back = set_precision(client, ds.id, pb.VECTOR_PRECISION_FLOAT32)
    assert back.config.vector_precision == pb.VECTOR_PRECISION_FLOAT32
    assert "vector_l2_ops" in index_definition(app, ds.id)
    assert uses_index(app, ds.id)

    code, msg = status_of(lambda: set_precision(client, ds.id, 7))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "vector_precision" in msg


def test_unset_precision_is_the_server_default_and_a_stored_config_without_it_is_float32(
    client: Client, app: App
) -> None:
    ds = precise_datastore(client, pb.COSINE, pb.VECTOR_PRECISION_UNSPECIFIED)
    default = app.settings.default_vector_precision
    assert (
        ds.config.vector_precision
        == {
            VectorPrecision.FLOAT32: pb.VECTOR_PRECISION_FLOAT32,
            VectorPrecision.FLOAT16: pb.VECTOR_PRECISION_FLOAT16,
        }[default]
    )
    # A datastore written before the field existed has no key: its index is float32.
    stored = precise_datastore(client, pb.COSINE, pb.VECTOR_PRECISION_FLOAT32)
    with app.db.connection() as conn:
        conn.execute(
            "UPDATE public.datastores SET config = config - 'vector_precision' WHERE id = %s",
            (stored.id,),
        )
    app.lookups.invalidate()
    got = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=stored.id))
    assert got.config.vector_precision == pb.VECTOR_PRECISION_FLOAT32
    assert DatastoreConfig.from_json({}).vector_precision is VectorPrecision.FLOAT32
    ingest_vectors(client, stored.id, np.eye(DIMS, dtype=np.float32))
    hits = query_vector(client, [stored.id], [1.0] + [0.0] * (DIMS - 1)).hits
    assert hits[0].external_id == "v0" and hits[0].score == pytest.approx(1.0)


def test_hybrid_and_keyword_search_on_a_float16_datastore(client: Client) -> None:
    ds = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name="float16 texts",
            similarity_threshold=0.0,
            max_results=5,
            config=pb.DatastoreConfig(
                search_mode=pb.HYBRID, vector_precision=pb.VECTOR_PRECISION_FLOAT16
            ),
        )
    )
    texts = {
        "gasket": "Replacement part ZX-4417 is the gasket for the pump housing.",
        "bread": "Sourdough bread rises slowly because wild yeast ferments the dough.",
        "rain": "Monsoon rains arrive when moist ocean air moves over warm land.",
        "chess": "The Sicilian defence is a sharp reply to the king's pawn opening.",
    }
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[pb.DocumentInput(external_id=k, text=v) for k, v in texts.items()],
        )
    )

    def ask(mode: int, exact: bool = False) -> pb.QueryResponse:
        return client.retrieval.Query(
            pb.QueryRequest(
                datastores=pb.DatastoreIds(ids=[ds.id]),
                text="which gasket fits part ZX-4417",
                mode=mode,  # type: ignore[arg-type]
                exact=exact,
            )
        )

    exact = {h.chunk_id: h.score for h in ask(pb.VECTOR, exact=True).hits}
    for mode in (pb.VECTOR, pb.HYBRID, pb.KEYWORD):
        hits = ask(mode).hits
        assert hits and hits[0].external_id == "gasket", mode
        for h in hits:
            if h.HasField("vector_score"):  # the vector side is scored in float32
                assert h.vector_score == pytest.approx(exact[h.chunk_id], abs=1e-6)
