"""Admission: how many calls run at once, in all and per principal.

A call past either bound is refused at once with RESOURCE_EXHAUSTED: work is
never queued until its deadline. The transport takes a slot of the ``Gate``
before it hands a call to a thread (so nothing waits for a thread), and the
RPC wrapper takes a principal's slot once the caller is known
(``principal_slot``). Service principals (agent runtimes, trusted) are bound by
the gate only.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from service.errors import ResourceExhausted
from service.models import Principal, Role


class Gate:
    """A counter of calls in flight with a hard bound; ``try_enter`` never waits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self._count >= self.limit:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._count -= 1

    @property
    def count(self) -> int:
        return self._count


class PrincipalSlots:
    """Calls in flight per user principal, each bounded by ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[UUID, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, principal: Principal) -> Iterator[None]:
        if principal.role is Role.SERVICE:
            yield
            return
        key = principal.user_id
        with self._lock:
            count = self._counts.get(key, 0)
            if count >= self.limit:
                raise ResourceExhausted(
                    f"too many calls in flight for this caller (limit {self.limit}); "
                    "retry after one finishes"
                )
            self._counts[key] = count + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._counts[key] - 1
                if left:
                    self._counts[key] = left
                else:
                    del self._counts[key]


# The transport sets this around each call it runs (see service.api.aio_bridge).
current_slots: contextvars.ContextVar[PrincipalSlots | None] = contextvars.ContextVar(
    "current_slots", default=None
)


@contextmanager
def principal_slot(principal: Principal) -> Iterator[None]:
    """Hold one of ``principal``'s call slots for the block, or raise ResourceExhausted."""
    slots = current_slots.get()
    if slots is None:
        yield
        return
    with slots.hold(principal):
        yield
