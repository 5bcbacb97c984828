"""Tenant isolation: user B's credential on user A's resources, and agent links across owners.

The credential B uses comes from ``CREDENTIAL_KINDS``: one entry per kind of credential
the service accepts (API keys of role user, Supabase user access tokens), each with the
server fixture it is presented to. Adding a kind is one line there.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2

from service.app import App
from service.client import Client, connect, pb
from service.models import Role
from tests.helpers.jwt_support import HS256_SECRET, hs256_token
from tests.helpers.own_server import own_server
from tests.helpers.rpc import status_of, vector_datastore

# A credential kind: (app, target, user_id) -> a client acting as that user with role user.
CredentialFactory = Callable[[App, str, uuid.UUID], Client]


def api_key_client(app: App, target: str, user_id: uuid.UUID) -> Client:
    return connect(target, app.identity.create_key(user_id, Role.USER).key)


def supabase_jwt_client(app: App, target: str, user_id: uuid.UUID) -> Client:
    return connect(target, hs256_token(user_id, role="authenticated"))


# kind -> (factory, the fixture naming the server that accepts that credential)
CREDENTIAL_KINDS: dict[str, tuple[CredentialFactory, str]] = {
    "api_key": (api_key_client, "target"),
    "supabase_jwt": (supabase_jwt_client, "jwt_target"),
}


@pytest.fixture(scope="module")
def jwt_target(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of its own that also takes Supabase tokens (the shared one takes keys only),
    on the shared database."""
    with own_server(pg_url, tmp_path_factory.mktemp("tenancy-jwt"), jwt_secret=HS256_SECRET) as (
        _,
        target,
    ):
        yield target


DENIED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND}


@dataclass
class Tenant:
    """A user with a datastore holding one secret document, and an agent linked to it."""

    client: Client
    datastore: pb.Datastore
    agent: pb.Agent
    secrets: tuple[str, ...]


@pytest.fixture(params=sorted(CREDENTIAL_KINDS))
def as_new_user(
    request: pytest.FixtureRequest, app: App, target: str
) -> Iterator[Callable[[], Client]]:
    """Factory: a client for a brand-new user, holding a credential of the parametrized kind."""
    kind, server = CREDENTIAL_KINDS[request.param]
    kind_target = request.getfixturevalue(server)
    clients: list[Client] = []

    def make() -> Client:
        user_id = app.identity.create_user(f"{uuid.uuid4().hex}@tenancy.test")
        clients.append(kind(app, kind_target, user_id))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def make_tenant(client: Client) -> Tenant:
    tag = uuid.uuid4().hex[:12]
    secrets = (f"secret-chunk-{tag}", f"secret-title-{tag}", f"secret-ds-{tag}", f"agent-{tag}")
    ds = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name=secrets[2],
            description=f"about {secrets[2]}",
            similarity_threshold=0.0,
            config=pb.DatastoreConfig(embedding_model="none", dimensions=2),
        )
    )
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[
                pb.DocumentInput(
                    external_id="doc-1",
                    title=secrets[1],
                    chunks=[pb.ChunkInput(content=secrets[0], vector=[1.0, 0.0])],
                )
            ],
        )
    )
    agent = client.agents.CreateAgent(pb.CreateAgentRequest(name=secrets[3]))
    client.agents.AttachDatastore(pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id))
    return Tenant(client, ds, agent, secrets)


def assert_none_of(secrets: tuple[str, ...], *texts: object) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in str(text), f"leaked {secret!r}"


def query_agent(client: Client, agent_id: str) -> pb.QueryResponse:
    return client.retrieval.Query(
        pb.QueryRequest(
            agent_id=agent_id, vector=pb.QueryVector(values=[1.0, 0.0]), similarity_threshold=0.0
        )
    )


def foreign_calls(a: Tenant, b: Tenant) -> dict[str, Callable[[], object]]:
    """Every RPC that takes an id, aimed by B at A's resources."""
    ds, agent, cl = a.datastore.id, a.agent.id, b.client

    def stream() -> list[pb.DocumentResult]:
        doc = pb.DocumentInput(external_id="x", chunks=[pb.ChunkInput(content="x", vector=[1, 0])])
        request = pb.StreamIngestRequest(datastore_id=ds, document=doc)
        return list(cl.ingest.StreamIngest(iter([request])))

    return {
        "GetDatastore": lambda: cl.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds)),
        "UpdateDatastore": lambda: cl.datastores.UpdateDatastore(
            pb.UpdateDatastoreRequest(
                datastore=pb.Datastore(id=ds, name="mine now"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            )
        ),
        "DeleteDatastore": lambda: cl.datastores.DeleteDatastore(pb.DeleteDatastoreRequest(id=ds)),
        "GetAgent": lambda: cl.agents.GetAgent(pb.GetAgentRequest(id=agent)),
        "DeleteAgent": lambda: cl.agents.DeleteAgent(pb.DeleteAgentRequest(id=agent)),
        "AttachDatastore(own agent, A's datastore)": lambda: cl.agents.AttachDatastore(
            pb.AttachDatastoreRequest(agent_id=b.agent.id, datastore_id=ds)
        ),
        "AttachDatastore(A's agent, own datastore)": lambda: cl.agents.AttachDatastore(
            pb.AttachDatastoreRequest(agent_id=agent, datastore_id=b.datastore.id)
        ),
        "DetachDatastore": lambda: cl.agents.DetachDatastore(
            pb.DetachDatastoreRequest(agent_id=agent, datastore_id=ds)
        ),
        "ListAgentDatastores": lambda: cl.agents.ListAgentDatastores(
            pb.ListAgentDatastoresRequest(agent_id=agent)
        ),
        "IngestDocuments": lambda: cl.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=ds, documents=[pb.DocumentInput(external_id="x")]
            )
        ),
        "StreamIngest": stream,
        "GetDocument": lambda: cl.ingest.GetDocument(
            pb.GetDocumentRequest(datastore_id=ds, external_id="doc-1", include_chunks=True)
        ),
        "ListDocuments": lambda: cl.ingest.ListDocuments(pb.ListDocumentsRequest(datastore_id=ds)),
        "DeleteDocuments": lambda: cl.ingest.DeleteDocuments(
            pb.DeleteDocumentsRequest(datastore_id=ds, external_ids=["doc-1"])
        ),
        "Query(datastore_ids)": lambda: cl.retrieval.Query(
            pb.QueryRequest(
                datastores=pb.DatastoreIds(ids=[ds]),
                vector=pb.QueryVector(values=[1.0, 0.0]),
                similarity_threshold=0.0,
            )
        ),
        "Query(agent_id)": lambda: query_agent(cl, agent),
    }


def test_every_id_taking_rpc_refuses_another_users_resources(
    as_new_user: Callable[[], Client],
) -> None:
    alice, bob = make_tenant(as_new_user()), make_tenant(as_new_user())
    for name, call in foreign_calls(alice, bob).items():
        code, details = status_of(call)
        assert code in DENIED, f"{name}: {code} {details}"
        assert_none_of(alice.secrets, details)
    # Listing shows Bob only his own; Alice's resources are all still there, unchanged.
    listed = (
        bob.client.datastores.ListDatastores(pb.ListDatastoresRequest()),
        bob.client.agents.ListAgents(pb.ListAgentsRequest()),
        bob.client.agents.ListAgentDatastores(pb.ListAgentDatastoresRequest(agent_id=bob.agent.id)),
        query_agent(bob.client, bob.agent.id),
    )
    assert_none_of(alice.secrets, *listed)
    a = alice.client
    assert (
        a.datastores.GetDatastore(pb.GetDatastoreRequest(id=alice.datastore.id)).name
        == (alice.secrets[2])
    )
    links = a.agents.ListAgentDatastores(pb.ListAgentDatastoresRequest(agent_id=alice.agent.id))
    assert [link.datastore_id for link in links.links] == [alice.datastore.id]
    hits = query_agent(a, alice.agent.id).hits
    assert [(h.content, h.title) for h in hits] == [(alice.secrets[0], alice.secrets[1])]


def test_a_service_key_cannot_link_an_agent_to_another_owners_datastore(
    make_client: Callable[..., Client], as_new_user: Callable[[], Client]
) -> None:
    alice, mallory = make_tenant(as_new_user()), make_tenant(as_new_user())
    runtime = make_client(Role.SERVICE)
    code, details = status_of(
        lambda: runtime.agents.AttachDatastore(
            pb.AttachDatastoreRequest(agent_id=mallory.agent.id, datastore_id=alice.datastore.id)
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "another user" in details
    assert_none_of(alice.secrets, details)
    # The same service key may still link an agent to its own owner's datastore.
    second = vector_datastore(mallory.client, dimensions=2)
    link = runtime.agents.AttachDatastore(
        pb.AttachDatastoreRequest(agent_id=mallory.agent.id, datastore_id=second.id)
    )
    assert link.datastore_id == second.id


def test_a_link_written_by_sql_is_never_served(
    app: App, make_client: Callable[..., Client], as_new_user: Callable[[], Client]
) -> None:
    alice, mallory = make_tenant(as_new_user()), make_tenant(as_new_user())
    with app.db.connection() as conn:  # as Agentopia's UI (its RLS checks only the agent) would
        conn.execute(
            "INSERT INTO public.agent_datastores (agent_id, datastore_id) VALUES (%s, %s)",
            (mallory.agent.id, alice.datastore.id),
        )
    runtime = make_client(Role.SERVICE)
    for caller in (mallory.client, runtime):
        reply = skipped_reply(caller, mallory.agent.id, alice.datastore.id)
        assert_none_of(alice.secrets, reply)
        reports = {r.datastore_id: r for r in reply.datastores}
        skipped = reports[alice.datastore.id]
        assert skipped.skipped and "another user" in skipped.skipped_reason
        assert (skipped.similarity_metric, skipped.max_results, skipped.hit_count) == (0, 0, 0)
        own = reports[mallory.datastore.id]
        assert not own.skipped and own.hit_count == 1
        assert [h.content for h in reply.hits] == [mallory.secrets[0]]
        links = caller.agents.ListAgentDatastores(
            pb.ListAgentDatastoresRequest(agent_id=mallory.agent.id)
        )
        assert [link.datastore_id for link in links.links] == [mallory.datastore.id]
        assert [d.id for d in links.datastores] == [mallory.datastore.id]
        assert_none_of(alice.secrets, links)
    # With the link in place, every id-taking RPC still refuses Mallory on Alice's resources.
    for name, call in foreign_calls(alice, mallory).items():
        code, details = status_of(call)
        assert code in DENIED, f"{name}: {code} {details}"
        assert_none_of(alice.secrets, details)
    # Alice's own agent still reads her datastore.
    assert [h.content for h in query_agent(alice.client, alice.agent.id).hits] == [alice.secrets[0]]


def skipped_reply(client: Client, agent_id: str, datastore_id: str) -> pb.QueryResponse:
    """The agent query once the service has heard of the new link (NOTIFY drops its cache)."""
    deadline = time.monotonic() + 5
    while True:
        reply = query_agent(client, agent_id)
        if any(r.datastore_id == datastore_id for r in reply.datastores):
            return reply
        assert time.monotonic() < deadline, "the link written by SQL never showed up"
        time.sleep(0.05)


def test_agentopia_links_of_other_types_are_reported_as_skipped(
    app: App, as_new_user: Callable[[], Client]
) -> None:
    owner = make_tenant(as_new_user())
    with app.db.connection() as conn:
        row = conn.execute(
            "INSERT INTO datastores (user_id, name, type) VALUES (%s, 'zep', 'getzep')"
            " RETURNING id",
            (owner.datastore.user_id,),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO public.agent_datastores (agent_id, datastore_id) VALUES (%s, %s)",
            (owner.agent.id, row[0]),
        )
    reply = skipped_reply(owner.client, owner.agent.id, str(row[0]))
    skipped = next(r for r in reply.datastores if r.datastore_id == str(row[0]))
    assert skipped.skipped and "'getzep'" in skipped.skipped_reason
    assert [h.content for h in reply.hits] == [owner.secrets[0]]
    # Its own owner still sees the link and the datastore's details.
    links = owner.client.agents.ListAgentDatastores(
        pb.ListAgentDatastoresRequest(agent_id=owner.agent.id)
    )
    assert [d.type for d in links.datastores] == ["pgvector", "getzep"]
