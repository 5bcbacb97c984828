"""Connection pool: psycopg 3 + psycopg_pool, pgvector types registered on every connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool, PoolTimeout

from service.errors import ResourceExhausted, Unavailable


def _configure(conn: psycopg.Connection) -> None:
    register_vector(conn)


def _reset(conn: psycopg.Connection) -> None:
    conn.autocommit = False  # ``autocommit()`` and ``pipeline()`` lend it in autocommit mode


class Database:
    """The service's one pool. ``open()`` at start-up, ``close()`` on shutdown."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = 10.0,
    ) -> None:
        self.conninfo = conninfo
        self._pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            configure=_configure,
            reset=_reset,
            check=ConnectionPool.check_connection,
            name="retrieval",
        )

    def open(self, *, timeout: float = 30.0) -> None:
        self._pool.open(wait=True, timeout=timeout)

    def close(self) -> None:
        self._pool.close()

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's measures and counters (size, idle, waiting, ...), for the metrics."""
        return self._pool.get_stats()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection inside a transaction (committed on clean exit)."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as e:
            raise Unavailable("database busy: no free connection, retry shortly") from e
        except psycopg.OperationalError as e:
            if e.sqlstate is not None and e.sqlstate.startswith("54"):
                # program_limit_exceeded & co: this request's data, not the database's health
                raise ResourceExhausted(f"the database refused it as too large: {e}") from e
            raise Unavailable(f"database unreachable: {e}") from e

    @contextmanager
    def autocommit(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in autocommit mode: each statement commits on its own."""
        with self.connection() as conn:
            conn.autocommit = True
            yield conn

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
        try:
            with self.connection() as conn:
                conn.execute("SELECT 1")
        except Unavailable:
            return False
        return True
