"""Connection pool: psycopg 3 + psycopg_pool, pgvector types registered on every connection.

Every borrow runs under the current call's deadline and cancellation (see
:mod:`service.call_scope`): the pool wait is cut to what is left, a statement still
running at the deadline (or when the client cancels) is cancelled, and the driver's
errors leave this module as the service's own (:mod:`service.errors`).

PostgreSQL's ``statement_timeout`` (set once at connect) bounds every statement; a
call's own, shorter deadline is enforced from the client side instead, by a
``StatementGuard`` that the ``Watchdog`` thread fires (a cancel request) when it passes.
That costs nothing on the way in (no ``SET`` round trip per call, which
``tests/test_round_trips.py`` would count) and one extra connection to the server only
when a deadline actually expires.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import psycopg
from pgvector.psycopg import register_vector
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from service import call_scope
from service.call_scope import CallScope
from service.errors import (
    Aborted,
    Cancelled,
    DeadlineExceeded,
    ModelSwitched,
    ResourceExhausted,
    RetrievalError,
    Unavailable,
)
from service.storage.availability import Availability

_log = logging.getLogger(__name__)

# The pool is waited on in slices this long, so a database found unreachable meanwhile
# ends the wait (UNAVAILABLE at once) instead of the pool timeout.
_WAIT_SLICE_S = 0.25

# A connection back in the pool for less than this is lent again without the
# ``SELECT 1`` check: that check is a round trip, a large share of a query's database
# time. A database restart makes a connection fail only after a pause longer than this
# (and the calls meanwhile fail fast, on the availability probe), so the connections
# lent after it are checked again.
CHECK_AFTER_IDLE_S = 1.0

# SQLSTATEs that mean the server itself is gone or not accepting work.
_SERVER_GONE = ("57P01", "57P02", "57P03")

# A borrowed connection, as storage functions take it: the core only passes it on from
# ``Database.connection()`` to them (within one transaction), never uses the driver.
Connection: TypeAlias = psycopg.Connection[TupleRow]


def _configure(conn: psycopg.Connection) -> None:
    register_vector(conn)


def _options(conninfo: str, statement_timeout_s: float) -> str:
    """libpq ``options`` with the statement timeout added: set at connect, no round trip."""
    given = str(conninfo_to_dict(conninfo).get("options") or "")
    timeout = f"-c statement_timeout={round(statement_timeout_s * 1000)}"
    return f"{given} {timeout}".strip()


# --------------------------------------------------------------------- statement guard

# After a cancel, the guard fires again at this interval until its borrow ends: a
# cancel that lands between two statements would otherwise leave the next one running.
REFIRE_S = 0.25
_CANCEL_TIMEOUT_S = 2.0


class StatementGuard:
    """One borrow of a connection: cancels its running statement until released."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn: psycopg.Connection[Any] | None = conn
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._conn is not None

    def fire(self) -> bool:
        """Cancel whatever the connection runs now; False once released."""
        # Under the lock: the borrow cannot end (and the connection go to another
        # call) while the cancel request is on its way.
        with self._lock:
            if self._conn is None:
                return False
            try:
                self._conn.cancel_safe(timeout=_CANCEL_TIMEOUT_S)
            except Exception as e:  # the database is gone: nothing left to cancel
                _log.debug("statement cancel failed: %s", e)
            return True

    def release(self) -> None:
        with self._lock:
            self._conn = None


class Watchdog:
    """One thread that fires guards when their time comes (and again every
    ``REFIRE_S`` until they are released). Released guards are dropped lazily."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, StatementGuard]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, when: float, guard: StatementGuard) -> None:
        """Fire ``guard`` at ``when`` (``time.monotonic()``) unless released first."""
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), guard))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sql-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is guard:
                self._cond.notify()  # earlier than what the thread sleeps towards

    def fire_now(self, guard: StatementGuard) -> None:
        """Cancel at once (the client cancelled), then keep cancelling until released."""
        if guard.fire():
            self.arm(time.monotonic() + REFIRE_S, guard)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    while self._heap and not self._heap[0][2].active:
                        heapq.heappop(self._heap)
                    if self._heap and self._heap[0][0] <= now:
                        guard = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            if guard.fire():
                self.arm(time.monotonic() + REFIRE_S, guard)


WATCHDOG = Watchdog()


# --------------------------------------------------------------------- the pool


class Database:
    """The service's one pool. ``open()`` at start-up, ``close()`` on shutdown."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = 10.0,
        statement_timeout_s: float = 30.0,
        probe_interval_s: float = 0.5,
    ) -> None:
        self.conninfo = conninfo
        self.statement_timeout_s = statement_timeout_s
        self._timeout = timeout
        self._sizes = (min_size, max_size)
        self._availability = Availability(
            conninfo, interval_s=probe_interval_s, on_recovered=self._renew_pool
        )
        # When each pooled connection was last given back in good order.
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection, float] = (
            weakref.WeakKeyDictionary()
        )
        self._pool = self._new_pool()

    def _new_pool(self) -> ConnectionPool:
        return ConnectionPool(
            self.conninfo,
            min_size=self._sizes[0],
            max_size=self._sizes[1],
            timeout=self._timeout,
            open=False,
            kwargs={"options": _options(self.conninfo, self.statement_timeout_s)},
            configure=_configure,
            check=self._check,
            name="retrieval",
        )

    def _check(self, conn: psycopg.Connection) -> None:
        returned = self._returned.get(conn)
        if returned is not None and time.monotonic() - returned < CHECK_AFTER_IDLE_S:
            return
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            self._availability.suspect()
            raise

    def _renew_pool(self) -> None:
        # The old pool retries its lost connections with a backoff of up to minutes;
        # a new one connects now. Connections still lent by the old one close on return.
        old, self._pool = self._pool, self._new_pool()
        self._pool.open(wait=False)
        threading.Thread(target=old.close, kwargs={"timeout": 1.0}, daemon=True).start()

    @property
    def available(self) -> bool:
        """False from a failed connection until the database answers again."""
        return self._availability.available

    def open(self, *, timeout: float = 30.0) -> None:
        self._pool.open(wait=True, timeout=timeout)

    def close(self) -> None:
        self._availability.close()
        self._pool.close()

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's measures and counters (size, idle, waiting, ...), for the metrics."""
        return self._pool.get_stats()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection inside a transaction (committed on clean exit)."""
        call = call_scope.current()
        try:
            conn, pool = self._borrow(call)
            try:
                with conn, self._guarded(conn, call):
                    yield conn
                self._returned[conn] = time.monotonic()  # in good order
            finally:
                pool.putconn(conn)
        except psycopg.Error as e:
            domain = self._translate(e, call)
            if domain is None:
                raise
            raise domain from e

    def _borrow(self, call: CallScope | None) -> tuple[psycopg.Connection, ConnectionPool]:
        timeout = self._timeout
        left = None if call is None else call.remaining()
        if call is not None and call.cancelled:
            raise Cancelled("the call was cancelled")
        if left is not None:
            if left <= 0:
                raise DeadlineExceeded("the call's deadline passed before it reached the database")
            timeout = min(timeout, left)
        end = time.monotonic() + timeout
        while True:
            if not self._availability.available:
                raise Unavailable("database unreachable, retry shortly")
            pool = self._pool
            try:
                wait = min(_WAIT_SLICE_S, end - time.monotonic())
                return pool.getconn(timeout=max(wait, 0.001)), pool
            except PoolClosed:
                if pool is self._pool:
                    raise Unavailable("the service is shutting down") from None
            except PoolTimeout:
                if time.monotonic() < end:
                    continue
                if left is not None and left <= self._timeout:
                    raise DeadlineExceeded(
                        "the call's deadline passed while waiting for a database connection"
                    ) from None
                raise Unavailable("database busy: no free connection, retry shortly") from None

    @contextmanager
    def _guarded(self, conn: psycopg.Connection, call: CallScope | None) -> Iterator[None]:
        """Cancel the borrow's statements at the call's deadline or cancellation."""
        if call is None:
            yield
            return
        guard = StatementGuard(conn)
        unsubscribe = call.on_cancel(lambda: WATCHDOG.fire_now(guard))
        left = call.remaining()
        # A deadline past the server's statement_timeout is enforced by the server.
        if call.deadline is not None and left is not None and left < self.statement_timeout_s:
            WATCHDOG.arm(call.deadline, guard)
        try:
            yield
        finally:
            guard.release()
            unsubscribe()

    def _translate(self, e: psycopg.Error, call: CallScope | None) -> RetrievalError | None:
        """The service's error for a driver error; None when it is about the request's
        data or the SQL (a constraint, a bad value): those the caller handles."""
        if isinstance(e, pg_errors.QueryCanceled):
            if call is not None and call.cancelled:
                return Cancelled("the call was cancelled; its database statement was too")
            return DeadlineExceeded(
                "the call's deadline (or the server's statement timeout) passed while the "
                "database was working on it"
            )
        if isinstance(e, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
            return Aborted(f"a concurrent transaction got in the way ({e.sqlstate}); retry")
        if isinstance(e, pg_errors.LockNotAvailable):
            return Aborted("a row or table was locked by a concurrent transaction; retry")
        if isinstance(e, pg_errors.DataException) and "dimensions" in str(e):
            # pgvector's "expected 384 dimensions, not 256": vectors of one model met a
            # datastore a re-embedding switched to another (checked inputs never do).
            return ModelSwitched(f"the datastore's vectors changed dimensions: {e}")
        if not isinstance(e, psycopg.OperationalError):
            return None
        if e.sqlstate is not None and e.sqlstate.startswith("54"):
            # program_limit_exceeded & co: this request's data, not the database's health
            return ResourceExhausted(f"the database refused it as too large: {e}")
        if e.sqlstate is None or e.sqlstate.startswith("08") or e.sqlstate in _SERVER_GONE:
            self._availability.suspect()
        return Unavailable(f"database unreachable: {e}")

    @contextmanager
    def autocommit(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in autocommit mode: each statement commits on its own."""
        with self.connection() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                # Back to transactions before the pool takes it: done here, not in a pool
                # ``reset`` callback, which psycopg_pool runs on a worker thread (a thread
                # wake-up on every query's way out).
                with contextlib.suppress(psycopg.Error):  # a broken one is discarded anyway
                    conn.autocommit = False

    @contextmanager
    def pipeline(self) -> Iterator[tuple[psycopg.Connection, psycopg.Pipeline]]:
        """A pooled connection in autocommit pipeline mode, for reads in one round trip.

        Statements queued before ``pipeline.sync()`` reach the server together and run
        as one implicit transaction, committed at the Sync: ``set_config(..., true)``
        (SET LOCAL) holds for the statements queued after it, and no BEGIN or COMMIT
        exchange is needed. Leaving the block sends psycopg's closing (empty) Sync.
        """
        with self.autocommit() as conn, conn.pipeline() as pipeline:
            yield conn, pipeline

    def ping(self) -> bool:
        """True when a connection can run ``SELECT 1``."""
        if not self.available:
            return False
        try:
            with self.connection() as conn:
                conn.execute("SELECT 1")
        except (RetrievalError, psycopg.Error):
            return False
        return True
