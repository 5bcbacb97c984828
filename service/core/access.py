"""Ownership rules: a user touches only its own rows; a service credential any agent."""

from __future__ import annotations

from service.errors import FailedPrecondition, PermissionDenied
from service.models import SERVED_DATASTORE_TYPE, Agent, Datastore, Principal


def check_datastore(principal: Principal, datastore: Datastore) -> None:
    if not principal.is_service and datastore.user_id != principal.user_id:
        raise PermissionDenied(f"datastore {datastore.id} belongs to another user")


def check_agent(principal: Principal, agent: Agent) -> None:
    if not principal.is_service and agent.user_id != principal.user_id:
        raise PermissionDenied(f"agent {agent.id} belongs to another user")


def check_served(datastore: Datastore) -> None:
    """Agentopia's pinecone/getzep rows live in the same table; this service cannot serve them."""
    if datastore.type != SERVED_DATASTORE_TYPE:
        raise FailedPrecondition(
            f"datastore {datastore.id} is of type {datastore.type!r}; this service serves only "
            f"{SERVED_DATASTORE_TYPE!r} datastores"
        )
    if datastore.config.dimensions <= 0 or not datastore.config.embedding_model:
        raise FailedPrecondition(
            f"datastore {datastore.id} has no embedding configuration (was it created outside "
            "this service?); create it through CreateDatastore"
        )
