"""Agent use cases, including attaching datastores (owning both sides is required)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from uuid import UUID

from service.core import access
from service.core.lookup_cache import LookupCache
from service.core.validation import (
    MAX_DESCRIPTION_CHARS,
    MAX_INSTRUCTIONS_CHARS,
    MAX_NAME_CHARS,
    check_text,
)
from service.errors import InvalidArgument
from service.models import Agent, AgentDatastoreLink, Datastore, Page, Principal
from service.storage import agents as rows
from service.storage import datastores as datastore_rows
from service.storage.database import Database
from service.storage.pagination import page_size


@dataclass(frozen=True)
class AgentFields:
    name: str
    description: str = ""
    system_instructions: str = ""
    assistant_instructions: str = ""
    active: bool = False


class Agents:
    def __init__(self, db: Database, lookups: LookupCache) -> None:
        self._db = db
        self._lookups = lookups

    def create(self, principal: Principal, fields: AgentFields) -> Agent:
        name = check_text(fields.name, "name", max_chars=MAX_NAME_CHARS).strip()
        if not name:
            raise InvalidArgument("name is required")
        with self._db.connection() as conn:
            return rows.insert(
                conn,
                user_id=principal.user_id,
                name=name,
                description=check_text(
                    fields.description, "description", max_chars=MAX_DESCRIPTION_CHARS
                ),
                system_instructions=check_text(
                    fields.system_instructions,
                    "system_instructions",
                    max_chars=MAX_INSTRUCTIONS_CHARS,
                ),
                assistant_instructions=check_text(
                    fields.assistant_instructions,
                    "assistant_instructions",
                    max_chars=MAX_INSTRUCTIONS_CHARS,
                ),
                active=fields.active,
            )

    def get(self, principal: Principal, agent_id: UUID) -> Agent:
        with self._db.connection() as conn:
            return access.agent(principal, agent_id, partial(rows.get, conn))

    def list_page(self, principal: Principal, size: int, token: str) -> Page[Agent]:
        owner = None if principal.is_service else principal.user_id
        with self._db.connection() as conn:
            return rows.list_page(conn, owner, page_size(size), token)

    def delete(self, principal: Principal, agent_id: UUID) -> None:
        self.get(principal, agent_id)
        with self._db.connection() as conn:
            rows.delete(conn, agent_id)
        self._lookups.invalidate()

    def attach(
        self, principal: Principal, agent_id: UUID, datastore_id: UUID
    ) -> AgentDatastoreLink:
        """Link an agent to a datastore. A user must own both (Agentopia checks only the
        agent); and, for every caller, the datastore's owner must be the agent's owner."""
        agent = self.get(principal, agent_id)
        with self._db.connection() as conn:
            datastore = access.datastore(principal, datastore_id, partial(datastore_rows.get, conn))
            access.check_link(agent, datastore)
            access.check_served(datastore)
            link = rows.attach(conn, agent_id, datastore_id)
        self._lookups.invalidate()
        return link

    def detach(self, principal: Principal, agent_id: UUID, datastore_id: UUID) -> bool:
        self.get(principal, agent_id)
        with self._db.connection() as conn:
            detached = rows.detach(conn, agent_id, datastore_id)
        self._lookups.invalidate()
        return detached

    def datastores(
        self, principal: Principal, agent_id: UUID
    ) -> list[tuple[AgentDatastoreLink, Datastore]]:
        """The agent's links with their datastores, oldest link first. Links the isolation
        rule forbids (made behind the service's back) are left out, datastore and all."""
        agent = self.get(principal, agent_id)
        with self._db.connection() as conn:
            links = rows.links(conn, agent_id)
            by_id = {
                d.id: d
                for d in datastore_rows.get_many(
                    conn, [link.datastore_id for link in links], counts=True
                )
            }
        return [
            (link, datastore)
            for link in links
            if (datastore := by_id.get(link.datastore_id)) is not None
            and access.link_refusal(agent, datastore) is None
        ]
