"""Hot-path lookups (API keys, datastore settings, agent links) cached between changes.

Entries are dropped whenever the database announces a change (a LISTEN thread,
so every replica sees every replica's writes) and, for read-your-writes, right
after this process's own changes. A generation counter keeps a lookup that
raced with a change from caching the old row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from service.models import Agent, Datastore, Principal
from service.storage import agents as agent_rows
from service.storage import datastores as datastore_rows
from service.storage import users
from service.storage.database import Database

T = TypeVar("T")
_MAX_ENTRIES = 10_000


class LookupCache:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, Any], Any] = {}
        self._generation = 0

    def invalidate(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1

    def _get(self, key: tuple[str, Any], load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._entries:
                value: T = self._entries[key]
                return value
            generation = self._generation
        value = load()
        with self._lock:
            if generation == self._generation and value is not None:
                if len(self._entries) >= _MAX_ENTRIES:
                    self._entries.clear()
                self._entries[key] = value
        return value

    def principal(self, key_hash: bytes) -> Principal | None:
        def load() -> Principal | None:
            with self._db.connection() as conn:
                return users.principal_for_key(conn, key_hash)

        return self._get(("key", key_hash), load)

    def datastore(self, datastore_id: UUID) -> Datastore | None:
        def load() -> Datastore | None:
            with self._db.connection() as conn:
                return datastore_rows.get(conn, datastore_id)

        return self._get(("datastore", datastore_id), load)

    def agent(self, agent_id: UUID) -> tuple[Agent, tuple[UUID, ...]] | None:
        """The agent and its attached datastore ids, oldest link first."""

        def load() -> tuple[Agent, tuple[UUID, ...]] | None:
            with self._db.connection() as conn:
                agent = agent_rows.get(conn, agent_id)
                if agent is None:
                    return None
                links = agent_rows.links(conn, agent_id)
            return agent, tuple(link.datastore_id for link in links)

        return self._get(("agent", agent_id), load)
