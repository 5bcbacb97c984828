"""The world the fuzz tests call into: a user's own resources, another user's, and checks.

Shared by ``test_fuzz.py`` (random messages) and ``test_bad_input.py`` (raw bytes and the
malformed inputs issue 13 names).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.app import App
from service.client import Client, connect, pb
from service.models import Role

BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@dataclass
class World:
    """The fuzzing user's own resources, another user's, and a way to make fresh ones."""

    client: Client
    key: str
    own: dict[str, str]
    foreign: dict[str, str]
    fresh: Callable[[str], str]


@contextmanager
def make_world(app: App, target: str) -> Iterator[World]:
    clients = []

    keys = []

    def user() -> Client:
        user_id = app.identity.create_user(f"{uuid.uuid4().hex}@fuzz.test")
        keys.append(app.identity.create_key(user_id, Role.USER).key)
        clients.append(connect(target, keys[-1]))
        return clients[-1]

    def resources(c: Client) -> dict[str, str]:
        text_ds = c.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="text"))
        byo = c.datastores.CreateDatastore(
            pb.CreateDatastoreRequest(
                name="byo", config=pb.DatastoreConfig(embedding_model="none", dimensions=2)
            )
        )
        c.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=text_ds.id,
                documents=[pb.DocumentInput(external_id="doc", text="a known document")],
            )
        )
        agent = c.agents.CreateAgent(pb.CreateAgentRequest(name="fuzzy"))
        for ds in (text_ds, byo):
            c.agents.AttachDatastore(
                pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id)
            )
        return {"datastore": text_ds.id, "byo": byo.id, "agent": agent.id}

    me, other = user(), user()
    own, foreign = resources(me), resources(other)

    def fresh(kind: str) -> str:
        if kind == "agent":
            return me.agents.CreateAgent(pb.CreateAgentRequest(name="fresh")).id
        return me.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="fresh")).id

    yield World(me, keys[0], own, foreign, fresh)
    for c in clients:
        c.close()


def token_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def resolve(w: World, value: str) -> str:
    owner, _, kind = value.partition(":")
    if owner == "own" and kind in w.own:
        return w.own[kind]
    if owner == "foreign" and kind in w.foreign:
        return w.foreign[kind]
    if owner == "fresh":
        return w.fresh(kind)
    return value


def expect_no_internal(call: Callable[[], object]) -> None:
    try:
        call()
    except grpc.RpcError as e:
        code, details = e.code(), e.details()
        assert code not in BROKEN, f"{code}: {details}"


def assert_serving(target: str, world: World) -> None:
    """Health says SERVING and the world's document is still there."""
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    got = world.client.ingest.GetDocument(
        pb.GetDocumentRequest(datastore_id=world.own["datastore"], external_id="doc")
    )
    assert got.document.external_id == "doc"
