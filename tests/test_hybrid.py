"""Hybrid search (RRF of vector and BM25), modes, text search configurations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2

from service.app import App
from service.client import Client, connect, pb
from service.models import Role
from tests.helpers.rpc import status_of, struct, vector_datastore

DOCS = {
    "gasket": "Replacement part ZX-4417 is the gasket for the pump housing.",
    "pump": "Centrifugal pumps move water by converting rotational energy into flow.",
    "seal": "Mechanical seals keep fluid from leaking along a rotating pump shaft.",
    "bread": "Sourdough bread rises slowly because wild yeast ferments the dough.",
    "cake": "A sponge cake gets its lift from eggs beaten with sugar.",
    "rain": "Monsoon rains arrive when moist ocean air moves over warm land.",
    "snow": "Snowflakes form when water vapour freezes around dust in cold clouds.",
    "chess": "The Sicilian defence is a sharp reply to the king's pawn opening.",
    "go": "In the game of go, capturing stones requires removing their liberties.",
    "violin": "A violin's sound depends on the wood and the varnish of its body.",
}


@pytest.fixture(scope="module")
def texts(app: App, target: str) -> Iterator[tuple[Client, str]]:
    """A real-model datastore (hybrid by default), one short document per topic."""
    user = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    client = connect(target, app.identity.create_key(user, Role.USER).key)
    ds = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name="texts",
            similarity_threshold=0.0,
            max_results=5,
            config=pb.DatastoreConfig(search_mode=pb.HYBRID),
        )
    )
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[
                pb.DocumentInput(
                    external_id=k,
                    text=v,
                    metadata=struct({"topic": "machines" if i < 3 else "other"}),
                )
                for i, (k, v) in enumerate(DOCS.items())
            ],
        )
    )
    yield client, ds.id
    client.close()


def ask(client: Client, ds_id: str, text: str, mode: int = 0, **kw: object) -> pb.QueryResponse:
    return client.retrieval.Query(
        pb.QueryRequest(
            datastores=pb.DatastoreIds(ids=[ds_id]),
            text=text,
            mode=mode,  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )
    )


def test_hybrid_is_the_datastores_default_and_finds_exact_terms(
    texts: tuple[Client, str],
) -> None:
    client, ds_id = texts
    got = ask(client, ds_id, "ZX-4417")
    assert got.datastores[0].mode == pb.HYBRID
    assert got.hits[0].external_id == "gasket"
    assert ask(client, ds_id, "ZX-4417", pb.KEYWORD).hits[0].external_id == "gasket"


def test_hybrid_scores_are_rrf_of_the_vector_and_keyword_rankings(
    texts: tuple[Client, str],
) -> None:
    client, ds_id = texts
    text = "how does a pump keep water from leaking"
    depth = {"max_results": 100}
    vector = ask(client, ds_id, text, pb.VECTOR, **depth)
    keyword = ask(client, ds_id, text, pb.KEYWORD, **depth)
    hybrid = ask(client, ds_id, text, pb.HYBRID, max_results=10)
    v_rank = {h.chunk_id: r for r, h in enumerate(vector.hits, start=1)}
    k_rank = {h.chunk_id: r for r, h in enumerate(keyword.hits, start=1)}
    v_hit = {h.chunk_id: h for h in vector.hits}
    k_hit = {h.chunk_id: h for h in keyword.hits}
    assert len(hybrid.hits) == 10
    for h in hybrid.hits:
        expected = sum(1 / (60 + r[h.chunk_id]) for r in (v_rank, k_rank) if h.chunk_id in r)
        assert h.score == pytest.approx(expected)
        assert h.vector_score == pytest.approx(v_hit[h.chunk_id].score)
        assert h.distance == pytest.approx(v_hit[h.chunk_id].distance)
        if h.chunk_id in k_hit:
            assert h.keyword_score == pytest.approx(k_hit[h.chunk_id].score)
        else:
            assert not h.HasField("keyword_score")
    assert [h.score for h in hybrid.hits] == sorted((h.score for h in hybrid.hits), reverse=True)


def test_the_threshold_applies_to_the_vector_score(texts: tuple[Client, str]) -> None:
    client, ds_id = texts
    text = "ZX-4417 pump gasket"
    everything = ask(client, ds_id, text, pb.HYBRID, max_results=10)
    scores = sorted(h.vector_score for h in everything.hits)
    cut = scores[len(scores) // 2]
    got = ask(client, ds_id, text, pb.HYBRID, max_results=10, similarity_threshold=cut)
    assert got.hits and all(h.vector_score >= cut for h in got.hits)
    assert {h.chunk_id for h in got.hits} == {
        h.chunk_id for h in everything.hits if h.vector_score >= cut
    }
    # nothing passes: the best fused hits come back flagged
    fallback = ask(client, ds_id, text, pb.HYBRID, similarity_threshold=1.0)
    assert len(fallback.hits) == 3 and all(h.below_threshold for h in fallback.hits)
    assert [h.chunk_id for h in fallback.hits] == [h.chunk_id for h in everything.hits[:3]]


def test_hybrid_with_a_filter(texts: tuple[Client, str]) -> None:
    client, ds_id = texts
    got = ask(client, ds_id, "water", pb.HYBRID, filter=struct({"topic": "machines"}))
    assert {h.external_id for h in got.hits} == {"gasket", "pump", "seal"}


def test_distinct_documents_in_hybrid_and_keyword_modes(client: Client) -> None:
    ds = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name="multi", similarity_threshold=0.0, config=pb.DatastoreConfig(chunk_size=16)
        )
    )
    long = " ".join(f"The pump number {i} moves water quickly." for i in range(12))
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[
                pb.DocumentInput(external_id="long", text=long),
                pb.DocumentInput(external_id="short", text="A pump for water."),
            ],
        )
    )
    for mode in (pb.HYBRID, pb.KEYWORD):
        plain = ask(client, ds.id, "pump water", mode, max_results=10)
        assert len({h.external_id for h in plain.hits}) < len(plain.hits)
        got = ask(client, ds.id, "pump water", mode, max_results=10, distinct_documents=True)
        assert sorted(h.external_id for h in got.hits) == ["long", "short"]


def test_modes_that_need_text_refuse_a_vector(client: Client) -> None:
    ds = vector_datastore(client, pb.COSINE, 2)
    code, msg = status_of(
        lambda: client.retrieval.Query(
            pb.QueryRequest(
                datastores=pb.DatastoreIds(ids=[ds.id]),
                vector=pb.QueryVector(values=[1.0, 0.0]),
                mode=pb.HYBRID,
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "send text" in msg
    # hybrid needs the datastore to embed the text
    code, msg = status_of(lambda: ask(client, ds.id, "hello", pb.HYBRID))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "embedding_model 'none'" in msg


def test_a_vector_query_on_a_hybrid_datastore_is_a_vector_search(client: Client) -> None:
    ds = vector_datastore(client, pb.COSINE, 2)
    ds = client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(id=ds.id, config=pb.DatastoreConfig(search_mode=pb.HYBRID)),
            update_mask=field_mask_pb2.FieldMask(paths=["config.search_mode"]),
        )
    )
    assert ds.config.search_mode == pb.HYBRID
    got = client.retrieval.Query(
        pb.QueryRequest(
            datastores=pb.DatastoreIds(ids=[ds.id]), vector=pb.QueryVector(values=[1.0, 0.0])
        )
    )
    assert got.datastores[0].mode == pb.VECTOR


def test_text_search_configuration(client: Client) -> None:
    german = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name="de",
            similarity_threshold=0.0,
            config=pb.DatastoreConfig(text_search_config="German"),
        )
    )
    assert german.config.text_search_config == "german"
    assert german.config.rrf_k == 60
    assert german.config.bm25_k1 == pytest.approx(1.2)
    assert german.config.bm25_b == pytest.approx(0.75)
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=german.id,
            documents=[pb.DocumentInput(external_id="h", text="Die Häuser stehen am Fluss.")],
        )
    )
    assert [h.external_id for h in ask(client, german.id, "Haus", pb.KEYWORD).hits] == ["h"]

    # switching configuration re-derives every tsvector: 'simple' does not stem
    updated = client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=german.id, config=pb.DatastoreConfig(text_search_config="simple")
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["config.text_search_config"]),
        )
    )
    assert updated.config.text_search_config == "simple"
    assert list(ask(client, german.id, "Haus", pb.KEYWORD).hits) == []
    assert [h.external_id for h in ask(client, german.id, "häuser", pb.KEYWORD).hits] == ["h"]


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (pb.DatastoreConfig(text_search_config="klingon"), "not a text search configuration"),
        (pb.DatastoreConfig(text_search_config="english'; --"), "not a text search"),
        (pb.DatastoreConfig(rrf_k=-1), "config.rrf_k must be"),
        (pb.DatastoreConfig(bm25_k1=-1), "config.bm25_k1 must be"),
        (pb.DatastoreConfig(bm25_b=1.5), "config.bm25_b must be"),
    ],
)
def test_bad_keyword_settings_are_rejected(
    client: Client, config: pb.DatastoreConfig, fragment: str
) -> None:
    code, msg = status_of(
        lambda: client.datastores.CreateDatastore(
            pb.CreateDatastoreRequest(name="x", config=config)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in msg


def test_agent_query_mixing_modes_interleaves_by_rank(client: Client) -> None:
    hybrid = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name="h",
            similarity_threshold=0.0,
            config=pb.DatastoreConfig(search_mode=pb.HYBRID),
        )
    )
    vector = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(name="v", similarity_threshold=0.0)
    )
    for ds in (hybrid, vector):
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=ds.id,
                documents=[pb.DocumentInput(external_id=k, text=v) for k, v in DOCS.items()],
            )
        )
    agent = client.agents.CreateAgent(pb.CreateAgentRequest(name="a"))
    for ds in (hybrid, vector):
        client.agents.AttachDatastore(
            pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id)
        )
    got = client.retrieval.Query(pb.QueryRequest(agent_id=agent.id, text="pump", max_results=4))
    assert {r.datastore_id: r.mode for r in got.datastores} == {
        hybrid.id: pb.HYBRID,
        vector.id: pb.VECTOR,
    }
    # rank 1 of each datastore, then rank 2 of each
    assert {got.hits[0].datastore_id, got.hits[1].datastore_id} == {hybrid.id, vector.id}
    assert {got.hits[2].datastore_id, got.hits[3].datastore_id} == {hybrid.id, vector.id}
