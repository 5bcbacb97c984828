"""Ownership rules: a user touches only its own rows; a service credential any agent."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from service.errors import FailedPrecondition, NotFound, PermissionDenied
from service.models import SERVED_DATASTORE_TYPE, Agent, Datastore, Principal


def datastore(
    principal: Principal,
    datastore_id: UUID,
    fetch: Callable[[UUID], Datastore | None],
    *,
    served: bool = False,
) -> Datastore:
    """The datastore ``fetch`` finds for ``datastore_id``, when the caller may touch it.

    Raises NotFound when there is none, PermissionDenied when it is another user's
    and, with ``served``, FailedPrecondition when this service cannot serve it.
    """
    found = fetch(datastore_id)
    if found is None:
        raise NotFound(f"datastore {datastore_id} not found")
    check_datastore(principal, found)
    if served:
        check_served(found)
    return found


def agent(principal: Principal, agent_id: UUID, fetch: Callable[[UUID], Agent | None]) -> Agent:
    """The agent ``fetch`` finds for ``agent_id``, when the caller may touch it.

    Raises NotFound when there is none, PermissionDenied when it is another user's.
    """
    found = fetch(agent_id)
    if found is None:
        raise NotFound(f"agent {agent_id} not found")
    check_agent(principal, found)
    return found


def check_datastore(principal: Principal, datastore: Datastore) -> None:
    if not principal.is_service and datastore.user_id != principal.user_id:
        raise PermissionDenied(f"datastore {datastore.id} belongs to another user")


def check_agent(principal: Principal, agent: Agent) -> None:
    if not principal.is_service and agent.user_id != principal.user_id:
        raise PermissionDenied(f"agent {agent.id} belongs to another user")


def check_served(datastore: Datastore) -> None:
    """Agentopia's pinecone/getzep rows live in the same table; this service cannot serve them."""
    reason = served_refusal(datastore)
    if reason is not None:
        raise FailedPrecondition(f"datastore {datastore.id} {reason}")


def served_refusal(datastore: Datastore) -> str | None:
    """Why this service cannot search ``datastore``, or None when it can."""
    if datastore.type != SERVED_DATASTORE_TYPE:
        return (
            f"is of type {datastore.type!r}; this service serves only "
            f"{SERVED_DATASTORE_TYPE!r} datastores"
        )
    if datastore.config.dimensions <= 0 or not datastore.config.embedding_model:
        return (
            "has no embedding configuration (was it created outside this service?); "
            "create it through CreateDatastore"
        )
    return None


def link_refusal(agent: Agent, datastore: Datastore) -> str | None:
    """Why the agent may not read ``datastore``, or None when it may.

    The isolation rule: an agent reads only datastores owned by the agent's owner,
    whoever asks (service credentials included), however the link was made.
    """
    if datastore.user_id != agent.user_id:
        return "the datastore belongs to another user than the agent's owner"
    return None


def check_link(agent: Agent, datastore: Datastore) -> None:
    """Refuse to link an agent to a datastore it may not read (see ``link_refusal``)."""
    reason = link_refusal(agent, datastore)
    if reason is not None:
        raise PermissionDenied(f"agent {agent.id} may not use datastore {datastore.id}: {reason}")
