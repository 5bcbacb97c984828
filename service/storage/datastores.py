"""Rows of ``public.datastores``."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from service.models import Datastore, DatastoreConfig, Metric, Page
from service.storage.pagination import KEYSET_CREATED_ID, decode_token, encode_token

_COLUMNS = sql.SQL(
    "d.id, d.user_id, d.name, d.description, d.type, d.config, d.similarity_metric,"
    " d.similarity_threshold, d.max_results, d.created_at, d.updated_at"
)
_COUNTS = sql.SQL(
    ", (SELECT count(*) FROM public.datastore_documents x WHERE x.datastore_id = d.id)"
    " AS document_count,"
    " (SELECT coalesce(sum(x.chunk_count), 0) FROM public.datastore_documents x"
    " WHERE x.datastore_id = d.id) AS chunk_count"
)
_NO_COUNTS = sql.SQL("")


def _from_row(row: DictRow) -> Datastore:
    return Datastore(
        id=UUID(str(row["id"])),
        user_id=UUID(str(row["user_id"])),
        name=row["name"],
        description=row["description"] or "",
        type=row["type"],
        config=DatastoreConfig.from_json(row["config"] or {}),
        metric=Metric(row["similarity_metric"]),
        similarity_threshold=float(row["similarity_threshold"]),
        max_results=int(row["max_results"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        document_count=int(row.get("document_count", 0)),
        chunk_count=int(row.get("chunk_count", 0)),
    )


def insert(
    conn: psycopg.Connection,
    *,
    user_id: UUID,
    name: str,
    description: str,
    type: str,
    config: DatastoreConfig,
    metric: Metric,
    similarity_threshold: float,
    max_results: int,
    id: UUID | None = None,
) -> Datastore:
    """The new row; ``id`` a spare partition's (None: the column's default)."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            sql.SQL(
                "INSERT INTO public.datastores AS d (id, user_id, name, description, type,"
                " config, similarity_metric, similarity_threshold, max_results)"
                " VALUES (coalesce(%s, gen_random_uuid()), %s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING {}"
            ).format(_COLUMNS),
            (
                id,
                user_id,
                name,
                description,
                type,
                Jsonb(config.to_json()),
                metric.value,
                similarity_threshold,
                max_results,
            ),
        )
        .fetchone()
    )
    assert row is not None
    return _from_row(row)


def get(
    conn: psycopg.Connection, datastore_id: UUID, *, counts: bool = False, lock: bool = False
) -> Datastore | None:
    query = sql.SQL("SELECT {}{} FROM public.datastores d WHERE d.id = %s").format(
        _COLUMNS, _COUNTS if counts else _NO_COUNTS
    )
    if lock and counts:
        # Lock first, count after: a statement that waits for the lock still counts
        # in the snapshot it started with, missing what the write it waited for added.
        conn.execute("SELECT 1 FROM public.datastores WHERE id = %s FOR UPDATE", (datastore_id,))
    elif lock:
        query += sql.SQL(" FOR UPDATE")
    row = conn.cursor(row_factory=dict_row).execute(query, (datastore_id,)).fetchone()
    return _from_row(row) if row else None


def lock_for_write(conn: psycopg.Connection, datastore_id: UUID) -> Datastore | None:
    """The datastore, share-locked to the end of the transaction: a concurrent update,
    delete or index rebuild waits for the write, and the write sees the settings it
    will be stored under."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            sql.SQL("SELECT {} FROM public.datastores d WHERE d.id = %s FOR SHARE").format(
                _COLUMNS
            ),
            (datastore_id,),
        )
        .fetchone()
    )
    return _from_row(row) if row else None


def get_many(
    conn: psycopg.Connection, datastore_ids: list[UUID], *, counts: bool = False
) -> list[Datastore]:
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            sql.SQL("SELECT {}{} FROM public.datastores d WHERE d.id = ANY(%s)").format(
                _COLUMNS, _COUNTS if counts else _NO_COUNTS
            ),
            (datastore_ids,),
        )
        .fetchall()
    )
    return [_from_row(r) for r in rows]


def list_page(
    conn: psycopg.Connection, user_id: UUID | None, limit: int, token: str
) -> Page[Datastore]:
    """Datastores by (created_at, id); all of them when user_id is None."""
    where: list[sql.Composable] = []
    params: list[Any] = []
    if user_id is not None:
        where.append(sql.SQL("d.user_id = %s"))
        params.append(user_id)
    after = decode_token(token, KEYSET_CREATED_ID)
    if after is not None:
        where.append(sql.SQL("(d.created_at, d.id) > (%s::timestamptz, %s::uuid)"))
        params.extend(after)
    clause = sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
    query = sql.SQL(
        "SELECT {}{} FROM public.datastores d {} ORDER BY d.created_at, d.id LIMIT %s"
    ).format(_COLUMNS, _COUNTS, clause)
    rows = conn.cursor(row_factory=dict_row).execute(query, [*params, limit + 1]).fetchall()
    items = [_from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items, encode_token([items[-1].created_at, items[-1].id]) if more else "")


def update(conn: psycopg.Connection, datastore_id: UUID, changes: dict[str, Any]) -> Datastore:
    """Write the given columns (trusted names from the core layer) and bump updated_at."""
    values = {k: Jsonb(v) if k == "config" else v for k, v in changes.items()}
    assignments = sql.SQL(", ").join(
        [
            *(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values),
            sql.SQL("updated_at = now()"),
        ]
    )
    query = sql.SQL("UPDATE public.datastores AS d SET {} WHERE d.id = {} RETURNING ").format(
        assignments, sql.Placeholder("_id")
    ) + sql.Composed([_COLUMNS, _COUNTS])
    row = (
        conn.cursor(row_factory=dict_row).execute(query, {**values, "_id": datastore_id}).fetchone()
    )
    assert row is not None
    return _from_row(row)


def delete(conn: psycopg.Connection, datastore_id: UUID) -> bool:
    return conn.execute("DELETE FROM public.datastores WHERE id = %s", (datastore_id,)).rowcount > 0
