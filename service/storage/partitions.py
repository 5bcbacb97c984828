"""Per-datastore chunk partitions and their HNSW indexes (DDL only)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid4

import psycopg
from psycopg import sql

from service import scoring
from service.models import HnswParams, Metric, VectorPrecision
from service.storage import privileges


@dataclass(frozen=True)
class BuildResources:
    """What one HNSW build may use, set with SET LOCAL in the building transaction."""

    memory_mb: int  # maintenance_work_mem: the graph builds fast while it fits
    parallel_workers: int  # max_parallel_maintenance_workers
    timeout_s: float  # statement_timeout of the build (a request's is too short at 1M)


def set_build_resources(conn: psycopg.Connection, resources: BuildResources) -> None:
    """SET LOCAL the build's memory, workers and time (must run inside a transaction)."""
    for name, value in (
        ("maintenance_work_mem", f"{resources.memory_mb}MB"),
        ("max_parallel_maintenance_workers", str(resources.parallel_workers)),
        ("statement_timeout", f"{round(resources.timeout_s * 1000)}"),
    ):
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))


def partition_name(datastore_id: UUID) -> str:
    return f"datastore_chunks_{datastore_id.hex}"


def index_name(datastore_id: UUID) -> str:
    return f"datastore_chunks_{datastore_id.hex}_hnsw"


def embedding_expr(dimensions: int, precision: VectorPrecision) -> sql.Composable:
    """The indexed expression: a typed cast so the untyped column can be indexed, to
    ``halfvec`` for a float16 index (the column is one type across every partition)."""
    kind = scoring.index_type(dimensions, precision) or "vector"
    return sql.SQL("(embedding::{}({}))").format(sql.SQL(kind), sql.Literal(dimensions))


def stored_expr(dimensions: int) -> sql.Composable:
    """The stored vector at full precision, which every score is computed from."""
    return sql.SQL("(embedding::vector({}))").format(sql.Literal(dimensions))


def create_partition(
    conn: psycopg.Connection,
    datastore_id: UUID,
    metric: Metric,
    dimensions: int,
    hnsw: HnswParams,
    *,
    precision: VectorPrecision,
) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE public.{} PARTITION OF public.datastore_chunks FOR VALUES IN ({})"
        ).format(sql.Identifier(partition_name(datastore_id)), sql.Literal(str(datastore_id)))
    )
    # Supabase's default privileges grant the Data API roles this new table too.
    privileges.lock_down_relation(conn, partition_name(datastore_id))
    create_index(conn, datastore_id, metric, dimensions, hnsw, precision=precision)


def top_up_spares(conn: psycopg.Connection, target: int, low: int) -> int:
    """When at most ``low`` partitions are spare, attach empty ones under fresh ids up to
    ``target``, all in this transaction; how many were attached.

    Attaching invalidates the parent's partition descriptor in every connection, and the
    next write through the parent in each rebuilds it (its cost grows with the number of
    partitions): one batch costs each connection one rebuild, where one partition per
    claim would cost one per create.

    Each is built as a plain table first (the parent's columns, defaults, generated
    columns, storage and keys), then attached: ATTACH PARTITION takes SHARE UPDATE
    EXCLUSIVE on the parent, so writes through the parent go on meanwhile, where CREATE
    TABLE ... PARTITION OF would block them with ACCESS EXCLUSIVE. A spare is locked down
    like any partition; its HNSW index, keyword index and triggers come with the datastore
    that claims it (they depend on its settings).
    """
    # One filler at a time across replicas, so the count below stays true.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('public.datastore_spare_partitions'))")
    spare = spare_count(conn)
    if spare > low:
        return 0
    for _ in range(target - spare):
        datastore_id = uuid4()
        name = partition_name(datastore_id)
        conn.execute(
            sql.SQL("CREATE TABLE public.{} (LIKE public.datastore_chunks INCLUDING ALL)").format(
                sql.Identifier(name)
            )
        )
        privileges.lock_down_relation(conn, name)
        conn.execute(
            sql.SQL(
                "ALTER TABLE public.datastore_chunks ATTACH PARTITION public.{} FOR VALUES IN ({})"
            ).format(sql.Identifier(name), sql.Literal(str(datastore_id)))
        )
        conn.execute(
            "INSERT INTO public.datastore_spare_partitions (datastore_id) VALUES (%s)",
            (datastore_id,),
        )
    return max(target - spare, 0)


def claim_spare(conn: psycopg.Connection) -> UUID | None:
    """Take a spare partition's id for a new datastore (None: none is spare). The claim
    is the row's delete, so a rollback of the creating transaction returns it."""
    row = conn.execute(
        "DELETE FROM public.datastore_spare_partitions WHERE datastore_id = ("
        " SELECT datastore_id FROM public.datastore_spare_partitions"
        " ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING datastore_id"
    ).fetchone()
    if row is None:
        return None
    datastore_id = UUID(str(row[0]))
    found = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"public.{partition_name(datastore_id)}",)
    ).fetchone()
    return datastore_id if found and found[0] else None


def spare_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM public.datastore_spare_partitions").fetchone()
    return int(row[0]) if row else 0


def create_index(
    conn: psycopg.Connection,
    datastore_id: UUID,
    metric: Metric,
    dimensions: int,
    hnsw: HnswParams,
    *,
    precision: VectorPrecision,
    resources: BuildResources | None = None,
) -> None:
    """Build the datastore's HNSW index (none above 4,000 dims: exact search there).

    ``resources`` for a build over existing rows; an empty partition's index needs none.
    """
    if scoring.index_type(dimensions, precision) is None:
        return
    if resources is not None:
        set_build_resources(conn, resources)
    conn.execute(
        hnsw_index_sql(
            sql.Identifier(index_name(datastore_id)),
            sql.SQL("public.{}").format(sql.Identifier(partition_name(datastore_id))),
            metric=metric,
            dimensions=dimensions,
            hnsw=hnsw,
            precision=precision,
        )
    )


def hnsw_index_sql(
    index: sql.Identifier,
    table: sql.Composable,
    *,
    metric: Metric,
    dimensions: int,
    hnsw: HnswParams,
    precision: VectorPrecision,
    if_not_exists: bool = False,
) -> sql.Composed:
    """The CREATE INDEX of a datastore's HNSW index on ``table``: its partition, or a
    re-embedding's shadow table."""
    return sql.SQL(
        "CREATE INDEX {}{} ON {} USING hnsw ({} {}) WITH (m = {}, ef_construction = {})"
    ).format(
        sql.SQL("IF NOT EXISTS " if if_not_exists else ""),
        index,
        table,
        embedding_expr(dimensions, precision),
        sql.SQL(scoring.opclass(metric, dimensions, precision)),
        sql.Literal(hnsw.m),
        sql.Literal(hnsw.ef_construction),
    )


def rebuild_index(
    conn: psycopg.Connection,
    datastore_id: UUID,
    metric: Metric,
    dimensions: int,
    hnsw: HnswParams,
    *,
    precision: VectorPrecision,
    resources: BuildResources,
) -> None:
    drop_index(conn, datastore_id)
    create_index(
        conn, datastore_id, metric, dimensions, hnsw, precision=precision, resources=resources
    )


def drop_index(conn: psycopg.Connection, datastore_id: UUID) -> None:
    conn.execute(
        sql.SQL("DROP INDEX IF EXISTS public.{}").format(sql.Identifier(index_name(datastore_id)))
    )


def drop_partition(conn: psycopg.Connection, datastore_id: UUID) -> None:
    conn.execute(
        sql.SQL("DROP TABLE IF EXISTS public.{}").format(
            sql.Identifier(partition_name(datastore_id))
        )
    )
