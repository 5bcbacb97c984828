"""The current call's deadline and cancellation, for the layers below the transport.

The RPC wrapper opens a scope for each call; storage reads it to bound the call's
statements and to cancel them when the client goes away. Neither grpc nor a database
driver is imported here: both sides meet through this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class CallScope:
    """One call: when it must end (``time.monotonic()``), and whether it was cancelled."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._cancelled = False
        self._finished = False
        self._listeners: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once past); None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def cancel(self) -> None:
        """The client went away: tell every listener once. A finished call ignores it
        (the transport also calls back when a call ends normally)."""
        with self._lock:
            if self._finished or self._cancelled:
                return
            self._cancelled = True
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    def on_cancel(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when the call is cancelled (at once if it already was);
        returns the function that unsubscribes it."""
        with self._lock:
            if not self._cancelled:
                self._listeners.append(listener)
                return lambda: self._unsubscribe(listener)
        listener()
        return lambda: None

    def _unsubscribe(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            self._listeners = []


_current: ContextVar[CallScope | None] = ContextVar("call_scope", default=None)


def current() -> CallScope | None:
    """The scope of the call this thread is serving, if any."""
    return _current.get()


@contextmanager
def opened(time_remaining: float | None) -> Iterator[CallScope]:
    """Make a new scope current for the block; ``time_remaining`` is the transport's
    ``context.time_remaining()`` (None: no deadline)."""
    deadline = None if time_remaining is None else time.monotonic() + time_remaining
    scope = CallScope(deadline)
    token = _current.set(scope)
    try:
        yield scope
    finally:
        scope.finish()
        try:
            _current.reset(token)
        except ValueError:  # a generator closed from another context
            _current.set(None)
