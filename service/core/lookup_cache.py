"""Hot-path lookups (API keys, token subjects, datastore settings, agent links) cached.

Entries are dropped whenever the database announces a change (a LISTEN thread,
so every replica sees every replica's writes) and, for read-your-writes, right
after this process's own changes. A generation counter keeps a lookup that
raced with a change from caching the old row. Every entry also expires after
``ttl_s`` (at most a minute), so a lost notification (a pooler, a dead listener
connection) delays a revocation by at most that long.

Unknown API keys and token subjects are remembered as unknown for
``negative_ttl_s`` (a bounded, oldest-first table), so repeating a bogus
credential does not reach the database each time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from service.models import Agent, Datastore
from service.storage import agents as agent_rows
from service.storage import datastores as datastore_rows
from service.storage import users
from service.storage.database import Database
from service.storage.users import KeyRecord

T = TypeVar("T")
_MAX_ENTRIES = 10_000
_MAX_MISSES = 10_000
# Kinds whose misses are remembered: credentials, looked up before anyone is known.
_NEGATIVE_KINDS = frozenset({"key", "user"})


class LookupCache:
    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float = 30.0,
        negative_ttl_s: float = 5.0,
        max_misses: int = _MAX_MISSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_misses``: unknown credentials remembered at most (oldest out first)."""
        self._db = db
        self._max_misses = max_misses
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, Any], tuple[float, Any]] = {}
        self._misses: OrderedDict[tuple[str, Any], float] = OrderedDict()
        self._generation = 0
        self._loads: Counter[str] = Counter()

    def invalidate(self) -> None:
        with self._lock:
            self._entries.clear()
            self._misses.clear()
            self._generation += 1

    def loads(self, kind: str) -> int:
        """How many times a ``kind`` lookup reached the database (cache misses)."""
        with self._lock:
            return self._loads[kind]

    def _cached(self, key: tuple[str, Any], now: float) -> tuple[bool, Any]:
        found = self._entries.get(key)
        if found is not None:
            if now < found[0]:
                return True, found[1]
            del self._entries[key]
        missed_until = self._misses.get(key)
        if missed_until is not None:
            if now < missed_until:
                return True, None
            del self._misses[key]
        return False, None

    def _get(self, key: tuple[str, Any], load: Callable[[], T]) -> T:
        with self._lock:
            hit, cached = self._cached(key, self._clock())
            if hit:
                value: T = cached
                return value
            generation = self._generation
            self._loads[key[0]] += 1
        value = load()
        with self._lock:
            if generation == self._generation:
                self._remember(key, value, self._clock())
        return value

    def _remember(self, key: tuple[str, Any], value: object, now: float) -> None:
        if value is not None:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (now + self._ttl_s, value)
        elif key[0] in _NEGATIVE_KINDS and self._negative_ttl_s > 0:
            while len(self._misses) >= self._max_misses:
                self._misses.popitem(last=False)
            self._misses[key] = now + self._negative_ttl_s

    def api_key(self, key_hash: bytes) -> KeyRecord | None:
        """The unrevoked key with this hash (expired or not: the caller checks)."""

        def load() -> KeyRecord | None:
            with self._db.connection() as conn:
                return users.key_record(conn, key_hash)

        return self._get(("key", key_hash), load)

    def user_exists(self, user_id: UUID) -> bool:
        """Whether ``auth.users`` has this id (the subject of an access token)."""

        def load() -> bool | None:
            with self._db.connection() as conn:
                return True if users.user_exists(conn, user_id) else None

        return self._get(("user", user_id), load) is True

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
