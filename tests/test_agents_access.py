"""Agents, attachments, agent queries across datastores, and ownership rules."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest

from service.client import Client, pb
from service.models import Role
from tests.helpers.rpc import ingest_vectors, status_of, vector_datastore


def make_agent(client: Client, name: str = "helper") -> pb.Agent:
    return client.agents.CreateAgent(pb.CreateAgentRequest(name=name, active=True))


def agent_query(
    client: Client, agent_id: str, vector: list[float], **kw: object
) -> pb.QueryResponse:
    return client.retrieval.Query(
        pb.QueryRequest(agent_id=agent_id, vector=pb.QueryVector(values=vector), **kw)  # type: ignore[arg-type]
    )


def test_agent_crud_and_links(client: Client) -> None:
    agent = make_agent(client)
    assert client.agents.GetAgent(pb.GetAgentRequest(id=agent.id)).name == "helper"
    ds = vector_datastore(client, pb.COSINE, 2)
    link = client.agents.AttachDatastore(
        pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id)
    )
    again = client.agents.AttachDatastore(
        pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id)
    )
    assert again.id == link.id  # attaching twice is idempotent
    listed = client.agents.ListAgentDatastores(pb.ListAgentDatastoresRequest(agent_id=agent.id))
    assert [d.id for d in listed.datastores] == [ds.id]
    assert client.agents.DetachDatastore(
        pb.DetachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id)
    ).detached
    listed = client.agents.ListAgentDatastores(pb.ListAgentDatastoresRequest(agent_id=agent.id))
    assert list(listed.links) == []
    assert [a.id for a in client.agents.ListAgents(pb.ListAgentsRequest()).agents] == [agent.id]
    client.agents.DeleteAgent(pb.DeleteAgentRequest(id=agent.id))
    code, _ = status_of(lambda: client.agents.GetAgent(pb.GetAgentRequest(id=agent.id)))
    assert code == grpc.StatusCode.NOT_FOUND


def test_agent_query_merges_datastores_with_their_own_settings(client: Client) -> None:
    """A cosine datastore (threshold 0.9, max 2) and a euclidean one (threshold 0.5, max 1)."""
    cos = vector_datastore(client, pb.COSINE, 2, threshold=0.9, max_results=2)
    ingest_vectors(
        client, cos.id, np.array([[1, 0], [0.99, 0.1], [0.95, 0.3], [0, 1]], np.float32), "c"
    )
    euc = vector_datastore(client, pb.EUCLIDEAN, 2, threshold=0.5, max_results=1)
    ingest_vectors(client, euc.id, np.array([[1, 0], [1.5, 0], [5, 5]], np.float32), "e")
    agent = make_agent(client)
    for ds in (cos, euc):
        client.agents.AttachDatastore(
            pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id)
        )

    got = agent_query(client, agent.id, [1.0, 0.0])
    # cosine: c0 (1.0), c1 (0.995) pass and max_results=2 keeps both; c2 (0.953) is cut.
    # euclidean: e0 (distance 0, score 1.0) passes; max_results=1 cuts e1 (score 0.667).
    assert sorted((h.datastore_id, h.external_id) for h in got.hits) == sorted(
        [(cos.id, "c0"), (cos.id, "c1"), (euc.id, "e0")]
    )
    scores = [h.score for h in got.hits]
    assert scores == sorted(scores, reverse=True)
    reports = {r.datastore_id: r for r in got.datastores}
    assert reports[cos.id].similarity_metric == pb.COSINE
    assert reports[cos.id].hit_count == 2
    assert reports[euc.id].similarity_metric == pb.EUCLIDEAN
    assert reports[euc.id].hit_count == 1
    assert reports[euc.id].max_results == 1
    assert pytest.approx(reports[cos.id].similarity_threshold, abs=1e-6) == 0.9


def test_agent_query_embeds_text_with_the_real_model(client: Client) -> None:
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="pets"))
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[
                pb.DocumentInput(external_id="cat", text="Cats purr and chase mice."),
                pb.DocumentInput(external_id="tax", text="Quarterly tax filing deadlines."),
            ],
        )
    )
    agent = make_agent(client)
    client.agents.AttachDatastore(pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id))
    got = client.retrieval.Query(
        pb.QueryRequest(agent_id=agent.id, text="my kitten", similarity_threshold=0.0)
    )
    assert [h.external_id for h in got.hits] == ["cat", "tax"]


def test_user_cannot_reach_another_users_datastore_or_agent(
    make_client: Callable[..., Client],
) -> None:
    alice, mallory = make_client(), make_client()
    ds = vector_datastore(alice, pb.COSINE, 2)
    agent = make_agent(alice)
    denied = grpc.StatusCode.PERMISSION_DENIED
    calls = [
        lambda: mallory.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds.id)),
        lambda: mallory.datastores.DeleteDatastore(pb.DeleteDatastoreRequest(id=ds.id)),
        lambda: mallory.agents.GetAgent(pb.GetAgentRequest(id=agent.id)),
        lambda: mallory.agents.DeleteAgent(pb.DeleteAgentRequest(id=agent.id)),
        lambda: mallory.retrieval.Query(
            pb.QueryRequest(
                datastores=pb.DatastoreIds(ids=[ds.id]), vector=pb.QueryVector(values=[1, 0])
            )
        ),
        lambda: mallory.retrieval.Query(
            pb.QueryRequest(agent_id=agent.id, vector=pb.QueryVector(values=[1, 0]))
        ),
        lambda: mallory.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=ds.id,
                documents=[
                    pb.DocumentInput(
                        external_id="x", chunks=[pb.ChunkInput(content="x", vector=[1, 0])]
                    )
                ],
            )
        ),
        lambda: mallory.ingest.ListDocuments(pb.ListDocumentsRequest(datastore_id=ds.id)),
    ]
    for call in calls:
        code, msg = status_of(call)
        assert code == denied
        assert "another user" in msg
    assert list(mallory.datastores.ListDatastores(pb.ListDatastoresRequest()).datastores) == []
    # alice's data is intact
    assert alice.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds.id)).id == ds.id


def test_attach_requires_owning_both_sides(make_client: Callable[..., Client]) -> None:
    alice, mallory = make_client(), make_client()
    alice_ds = vector_datastore(alice, pb.COSINE, 2)
    mallory_agent = make_agent(mallory)
    code, msg = status_of(
        lambda: mallory.agents.AttachDatastore(
            pb.AttachDatastoreRequest(agent_id=mallory_agent.id, datastore_id=alice_ds.id)
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "datastore" in msg
    links = mallory.agents.ListAgentDatastores(
        pb.ListAgentDatastoresRequest(agent_id=mallory_agent.id)
    )
    assert list(links.links) == []


def test_service_key_may_act_on_any_agent(make_client: Callable[..., Client]) -> None:
    alice, runtime = make_client(), make_client(Role.SERVICE)
    ds = vector_datastore(alice, pb.DOT, 2)
    ingest_vectors(alice, ds.id, np.array([[0.5, 0]], np.float32))
    agent = make_agent(alice)
    alice.agents.AttachDatastore(pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id))
    got = agent_query(runtime, agent.id, [1.0, 0.0])
    assert [h.external_id for h in got.hits] == ["v0"]
