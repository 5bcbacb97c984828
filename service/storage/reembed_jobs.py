"""A re-embedding job's row (``datastore_reembed_jobs``) and its advisory lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from service.models import RUNNING_REEMBED_STATES, ReembedStatus

# Every column NOT NULL and of the type its field names: rows map onto the model.
_JOB_COLUMNS = sql.SQL(
    "state, chunks_done, chunks_total, target_model, target_dimensions, source_model,"
    " source_dimensions, error"
)
_JOBS = class_row(ReembedStatus)
# Any constant: the high bits of every re-embedding job's advisory lock key.
_LOCK_CLASS = 0x52454D42


def get_job(
    conn: psycopg.Connection, datastore_id: UUID, *, lock: bool = False
) -> ReembedStatus | None:
    query = sql.SQL(
        "SELECT {} FROM public.datastore_reembed_jobs WHERE datastore_id = %s{}"
    ).format(_JOB_COLUMNS, sql.SQL(" FOR UPDATE" if lock else ""))
    return conn.cursor(row_factory=_JOBS).execute(query, (datastore_id,)).fetchone()


def running_jobs(conn: psycopg.Connection) -> list[UUID]:
    rows = conn.execute(
        "SELECT datastore_id FROM public.datastore_reembed_jobs WHERE state = ANY(%s)"
        " ORDER BY created_at",
        (list(RUNNING_REEMBED_STATES),),
    ).fetchall()
    return [UUID(str(r[0])) for r in rows]


def put_job(conn: psycopg.Connection, datastore_id: UUID, job: ReembedStatus) -> None:
    """Record a new job (replacing the datastore's previous one)."""
    conn.execute(
        "INSERT INTO public.datastore_reembed_jobs (datastore_id, state, chunks_done,"
        " chunks_total, target_model, target_dimensions, source_model, source_dimensions, error)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (datastore_id) DO UPDATE SET"
        " state = excluded.state, chunks_done = excluded.chunks_done,"
        " chunks_total = excluded.chunks_total, target_model = excluded.target_model,"
        " target_dimensions = excluded.target_dimensions, source_model = excluded.source_model,"
        " source_dimensions = excluded.source_dimensions, error = excluded.error,"
        " created_at = now(), updated_at = now()",
        (
            datastore_id,
            job.state,
            job.chunks_done,
            job.chunks_total,
            job.target_model,
            job.target_dimensions,
            job.source_model,
            job.source_dimensions,
            job.error,
        ),
    )


def set_state(conn: psycopg.Connection, datastore_id: UUID, state: str, error: str = "") -> None:
    conn.execute(
        "UPDATE public.datastore_reembed_jobs SET state = %s, error = %s, updated_at = now()"
        " WHERE datastore_id = %s",
        (state, error[:2000], datastore_id),
    )


def advance(conn: psycopg.Connection, datastore_id: UUID, current: str, following: str) -> bool:
    """Move the job from ``current`` to ``following``; False if it is no longer in
    ``current`` (cancelled meanwhile)."""
    return (
        conn.execute(
            "UPDATE public.datastore_reembed_jobs SET state = %s, updated_at = now()"
            " WHERE datastore_id = %s AND state = %s",
            (following, datastore_id, current),
        ).rowcount
        > 0
    )


def set_progress(conn: psycopg.Connection, datastore_id: UUID, done: int, total: int) -> None:
    conn.execute(
        "UPDATE public.datastore_reembed_jobs SET chunks_done = %s, chunks_total = %s,"
        " updated_at = now() WHERE datastore_id = %s",
        (done, total, datastore_id),
    )


@contextmanager
def exclusive(conninfo: str, datastore_id: UUID) -> Iterator[bool]:
    """Hold the datastore's job lock (a session advisory lock on a connection of its
    own) while the block runs; yields False when another process holds it."""
    key = datastore_id.int & 0x7FFFFFFF
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_CLASS, key)).fetchone()
        yield bool(row and row[0])


def stopped_jobs(conn: psycopg.Connection) -> list[UUID]:
    """Datastores whose latest job is over (done, failed or cancelled)."""
    rows = conn.execute(
        "SELECT datastore_id FROM public.datastore_reembed_jobs WHERE state <> ALL(%s)",
        (list(RUNNING_REEMBED_STATES),),
    ).fetchall()
    return [UUID(str(r[0])) for r in rows]
