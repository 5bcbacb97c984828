"""Re-embedding's storage: the shadow table, batch copies and the switch (the job row is
:mod:`service.storage.reembed_jobs`).

While a job runs, the datastore's partition (``datastore_chunks_<hex>``) keeps serving
queries and ingests with the old model; the new vectors go into a shadow table
(``datastore_chunks_<hex>_next``) built like the partition (same columns, generated
tsvector, storage), with the same chunk ids. :func:`swap` then drops the partition
and attaches the shadow in its place, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row

from service import scoring
from service.models import (
    HnswParams,
    Metric,
    Vector,
    VectorPrecision,
)
from service.storage import privileges
from service.storage.partitions import (
    BuildResources,
    hnsw_index_sql,
    partition_name,
    set_build_resources,
)


class ChunkText(NamedTuple):
    id: int
    content: str


_CHUNK_TEXTS = class_row(ChunkText)


def shadow_name(datastore_id: UUID) -> str:
    return f"{partition_name(datastore_id)}_next"


def _ident(name: str) -> sql.Composable:
    return sql.SQL("public.{}").format(sql.Identifier(name))


# ------------------------------------------------------------------ the shadow table


def create_shadow(conn: psycopg.Connection, datastore_id: UUID) -> None:
    """A fresh, empty shadow built like the partition, with its keys but no HNSW index."""
    shadow = shadow_name(datastore_id)
    drop_shadow(conn, datastore_id)
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES EXCLUDING CONSTRAINTS)"
        ).format(_ident(shadow), _ident(partition_name(datastore_id)))
    )
    # Like every partition: no Data API role may read it (storage/privileges.py).
    privileges.lock_down_relation(conn, shadow)
    # The CHECK lets ATTACH PARTITION skip its scan; the key matches the parent's so
    # that ATTACH adopts it instead of building and validating a new one. No foreign key
    # to datastore_documents (migration 0009): chunks of documents deleted meanwhile
    # leave the shadow by delete_stale, under the partition's lock, before the swap.
    conn.execute(
        sql.SQL(
            "ALTER TABLE {t} ADD PRIMARY KEY (datastore_id, id),"
            " ADD CONSTRAINT partition_key_check CHECK (datastore_id = {ds})"
        ).format(t=_ident(shadow), ds=sql.Literal(str(datastore_id)))
    )
    conn.execute(
        sql.SQL("CREATE INDEX {} ON {} (datastore_id, document_id)").format(
            sql.Identifier(f"{shadow}_datastore_id_document_id_idx"), _ident(shadow)
        )
    )
    conn.execute(
        sql.SQL("CREATE INDEX {} ON {} USING gin (tsv)").format(
            sql.Identifier(f"{shadow}_tsv_idx"), _ident(shadow)
        )
    )


def drop_shadow(conn: psycopg.Connection, datastore_id: UUID) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(shadow_name(datastore_id))))


def try_drop_shadow(conn: psycopg.Connection, datastore_id: UUID, lock_wait_ms: int) -> bool:
    """Drop the shadow table in a savepoint, waiting at most ``lock_wait_ms`` for each of
    its locks; False (nothing dropped, the transaction goes on) when they stay busy."""
    try:
        with conn.transaction(), bounded_lock_waits(conn, lock_wait_ms):
            drop_shadow(conn, datastore_id)
    except LockBusy:
        return False
    return True


def shadow_exists(conn: psycopg.Connection, datastore_id: UUID) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"public.{shadow_name(datastore_id)}",)
    ).fetchone()
    return bool(row and row[0])


def counts(conn: psycopg.Connection, datastore_id: UUID) -> tuple[int, int]:
    """(chunks in the partition, chunks in the shadow)."""
    query = sql.SQL(
        "SELECT (SELECT count(*) FROM {}) AS live, (SELECT count(*) FROM {}) AS shadow"
    ).format(_ident(partition_name(datastore_id)), _ident(shadow_name(datastore_id)))
    row = conn.cursor(row_factory=dict_row).execute(query).fetchone()
    assert row is not None
    return int(row["live"]), int(row["shadow"])


def last_copied(conn: psycopg.Connection, datastore_id: UUID) -> int:
    row = conn.execute(
        sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(_ident(shadow_name(datastore_id)))
    ).fetchone()
    return int(row[0]) if row else 0


# Characters of chunk text one batch holds at most (at least one chunk): with the
# batch size, the bound on a job's memory whatever its chunks' lengths.
BATCH_CHARS = 4_000_000


def _bounded(
    conn: psycopg.Connection, inner: sql.Composable, params: dict[str, Any]
) -> list[ChunkText]:
    """The rows (id, content) of ``inner`` (ordered by id, limited), cut where their
    text passes BATCH_CHARS."""
    query = sql.SQL(
        "SELECT s.id, s.content FROM (SELECT b.id, b.content,"
        " sum(length(b.content)) OVER (ORDER BY b.id) - length(b.content) AS before"
        " FROM ({}) b) s WHERE s.before < %(chars)s ORDER BY s.id"
    ).format(inner)
    return (
        conn.cursor(row_factory=_CHUNK_TEXTS)
        .execute(query, {**params, "chars": BATCH_CHARS})
        .fetchall()
    )


def chunks_after(
    conn: psycopg.Connection, datastore_id: UUID, after: int, limit: int
) -> list[ChunkText]:
    """The partition's next chunks by id: the first pass of a copy."""
    inner = sql.SQL(
        "SELECT c.id, c.content FROM {} c WHERE c.datastore_id = %(ds)s AND c.id > %(after)s"
        " ORDER BY c.id LIMIT %(limit)s"
    ).format(_ident(partition_name(datastore_id)))
    return _bounded(conn, inner, {"ds": datastore_id, "after": after, "limit": limit})


def missing_chunks(conn: psycopg.Connection, datastore_id: UUID, limit: int) -> list[ChunkText]:
    """Chunks of the partition the shadow lacks (written since the first pass saw them)."""
    inner = sql.SQL(
        "SELECT c.id, c.content FROM {} c WHERE NOT EXISTS (SELECT 1 FROM {} s"
        " WHERE s.datastore_id = c.datastore_id AND s.id = c.id) ORDER BY c.id LIMIT %(limit)s"
    ).format(_ident(partition_name(datastore_id)), _ident(shadow_name(datastore_id)))
    return _bounded(conn, inner, {"limit": limit})


def delete_stale(conn: psycopg.Connection, datastore_id: UUID) -> int:
    """Drop shadow chunks the partition no longer has (replaced or deleted since)."""
    return conn.execute(
        sql.SQL(
            "DELETE FROM {} s WHERE NOT EXISTS (SELECT 1 FROM {} c"
            " WHERE c.datastore_id = s.datastore_id AND c.id = s.id)"
        ).format(_ident(shadow_name(datastore_id)), _ident(partition_name(datastore_id)))
    ).rowcount


def _copied_columns(conn: psycopg.Connection, table: str) -> list[str]:
    """The partition's stored columns other than those a copy replaces or generates."""
    rows = conn.execute(
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s::regclass"
        " AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        (f"public.{table}",),
    ).fetchall()
    return [str(r[0]) for r in rows if r[0] not in ("embedding", "token_count")]


def write_batch(
    conn: psycopg.Connection,
    datastore_id: UUID,
    vectors: Sequence[tuple[int, Vector, int]],
) -> int:
    """Copy chunks (id, new vector, new token count) into the shadow, every other column
    taken from the partition; chunks gone from the partition meanwhile are skipped."""
    live = partition_name(datastore_id)
    conn.execute(
        "CREATE TEMP TABLE reembed_batch (id bigint, embedding vector, token_count integer)"
        " ON COMMIT DROP"
    )
    with conn.cursor() as cur, cur.copy("COPY reembed_batch FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "vector", "int4"])
        for row in vectors:
            copy.write_row(row)
    columns = [sql.Identifier(c) for c in _copied_columns(conn, live)]
    return conn.execute(
        sql.SQL(
            "INSERT INTO {shadow} ({cols}, embedding, token_count)"
            " SELECT {ccols}, b.embedding, b.token_count FROM reembed_batch b"
            " JOIN {live} c ON c.datastore_id = %s AND c.id = b.id ON CONFLICT DO NOTHING"
        ).format(
            shadow=_ident(shadow_name(datastore_id)),
            cols=sql.SQL(", ").join(columns),
            ccols=sql.SQL(", ").join(sql.SQL("c.{}").format(c) for c in columns),
            live=_ident(live),
        ),
        (datastore_id,),
    ).rowcount


def build_index(
    conn: psycopg.Connection,
    datastore_id: UUID,
    metric: Metric,
    dimensions: int,
    hnsw: HnswParams,
    *,
    precision: VectorPrecision,
    resources: BuildResources,
) -> None:
    """The shadow's HNSW index for the new dimensions (none above 4,000: exact search)."""
    if scoring.index_type(dimensions, precision) is None:
        return
    set_build_resources(conn, resources)
    shadow = shadow_name(datastore_id)
    conn.execute(
        hnsw_index_sql(
            sql.Identifier(f"{shadow}_hnsw"),
            _ident(shadow),
            metric=metric,
            dimensions=dimensions,
            hnsw=hnsw,
            precision=precision,
            if_not_exists=True,
        )
    )


class LockBusy(Exception):
    """A lock of the switch was not granted within its bound; the switch retries."""


@contextmanager
def bounded_lock_waits(conn: psycopg.Connection, timeout_ms: int) -> Iterator[None]:
    """Bound every lock wait of the rest of the transaction (raising LockBusy).

    The switch drops and attaches a partition: locks on the partition and on the
    parent table. Queries take those two in either order (the relation they name,
    then the parent for its partition constraint; or a cached plan's range table),
    so some order of the switch's requests always closes a cycle with one of them.
    Waiting at most ``timeout_ms``, well below deadlock_timeout (1 s by default),
    makes the switch give way first and retry, instead of PostgreSQL's deadlock
    detector cancelling a query.
    """
    row = conn.execute(
        "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)",
        (f"{timeout_ms}ms",),
    ).fetchone()
    try:
        yield
    except psycopg.errors.LockNotAvailable as e:
        raise LockBusy(str(e)) from e
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (row[0] if row else "0",))


def lock_partition(conn: psycopg.Connection, datastore_id: UUID) -> None:
    """Block writes to the partition until commit (queries go on)."""
    conn.execute(
        sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(_ident(partition_name(datastore_id)))
    )


def swap(conn: psycopg.Connection, datastore_id: UUID) -> None:
    """Put the shadow in the partition's place: drop the partition, rename the shadow
    and its indexes to the partition's names, attach it, install the keyword triggers.

    Dropping fires no triggers, so the keyword statistics stay as they are: the
    shadow holds the same chunk texts under the same ids.
    """
    live, shadow = partition_name(datastore_id), shadow_name(datastore_id)
    # Run inside ``bounded_lock_waits``: see there why.
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(_ident(live)))
    conn.execute("LOCK TABLE ONLY public.datastore_chunks IN ACCESS EXCLUSIVE MODE")
    conn.execute(sql.SQL("DROP TABLE {}").format(_ident(live)))
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(_ident(shadow), sql.Identifier(live))
    )
    indexes: list[Any] = conn.execute(
        "SELECT c.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c"
        " ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass",
        (f"public.{live}",),
    ).fetchall()
    for (name,) in indexes:
        if name.startswith(shadow):
            conn.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    _ident(name), sql.Identifier(live + name[len(shadow) :])
                )
            )
    conn.execute(
        sql.SQL(
            "ALTER TABLE public.datastore_chunks ATTACH PARTITION {} FOR VALUES IN ({})"
        ).format(_ident(live), sql.Literal(str(datastore_id)))
    )
    conn.execute(
        "SELECT public.datastore_keyword_install(%s::regclass, %s)",
        (f"public.{live}", datastore_id),
    )
