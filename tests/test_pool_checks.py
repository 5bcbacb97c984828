"""What the pool sends when it lends a connection: the ``SELECT 1``-style check only
after the connection sat idle, and a connection lent in autocommit mode comes back
to transactions, all without a pool worker thread."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from service.app import App
from service.storage.database import CHECK_AFTER_IDLE_S, Database


@pytest.fixture
def one_connection(app: App, pg_url: str) -> Iterator[Database]:
    """A pool of exactly one connection on the (migrated) test database."""
    db = Database(pg_url, min_size=1, max_size=1)
    db.open()
    yield db
    db.close()


def sent_statements(trace: Path) -> list[str]:
    """The text of every simple-protocol query the client sent, in order."""
    return [
        line.split("\t")[3].strip().strip('"')
        for line in trace.read_text().splitlines()
        if line.startswith("F\t") and line.split("\t")[2] == "Query"
    ]


def test_a_connection_back_moments_ago_is_lent_unchecked_an_idle_one_is_checked(
    one_connection: Database, tmp_path: Path
) -> None:
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as f:
        with one_connection.connection() as conn:
            conn.pgconn.trace(f.fileno())
            conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            traced = conn
        with one_connection.connection() as conn:
            assert conn is traced
            conn.execute("SELECT 2")
        time.sleep(CHECK_AFTER_IDLE_S + 0.2)
        with one_connection.connection() as conn:
            assert conn is traced
            conn.execute("SELECT 3")
        traced.pgconn.untrace()
    # psycopg_pool's check is an empty query; it runs only before the idle lend
    assert sent_statements(trace) == [
        "BEGIN",
        "SELECT 2",
        "COMMIT",
        "",
        "BEGIN",
        "SELECT 3",
        "COMMIT",
    ]


def test_an_autocommit_lend_comes_back_in_transaction_mode(one_connection: Database) -> None:
    with one_connection.autocommit() as conn:
        assert conn.autocommit
        lent = conn
    with one_connection.connection() as conn:
        assert conn is lent and not conn.autocommit
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def test_a_broken_connection_is_checked_and_replaced(one_connection: Database, app: App) -> None:
    """A connection whose server process died is found by the check, not by a query."""
    with one_connection.connection() as conn:
        pid = conn.info.backend_pid
    with app.db.connection() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(CHECK_AFTER_IDLE_S + 0.2)
    with one_connection.connection() as conn:
        assert conn.info.backend_pid != pid
        assert conn.execute("SELECT 1").fetchone() == (1,)
