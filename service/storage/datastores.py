"""Rows of ``public.datastores``."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from service.models import Datastore, DatastoreConfig, Metric, Page
from service.storage.pagination import KEYSET_CREATED_ID, decode_token, encode_token

_COLUMNS = (
    "d.id, d.user_id, d.name, d.description, d.type, d.config, d.similarity_metric,"
    " d.similarity_threshold, d.max_results, d.created_at, d.updated_at"
)
_COUNTS = (
    ", (SELECT count(*) FROM public.datastore_documents x WHERE x.datastore_id = d.id),"
    " (SELECT coalesce(sum(x.chunk_count), 0) FROM public.datastore_documents x"
    " WHERE x.datastore_id = d.id)"
)


def _from_row(row: tuple[Any, ...]) -> Datastore:
    counts = row[11:13] if len(row) > 11 else (0, 0)
    return Datastore(
        id=UUID(str(row[0])),
        user_id=UUID(str(row[1])),
        name=row[2],
        description=row[3] or "",
        type=row[4],
        config=DatastoreConfig.from_json(row[5] or {}),
        metric=Metric(row[6]),
        similarity_threshold=float(row[7]),
        max_results=int(row[8]),
        created_at=row[9],
        updated_at=row[10],
        document_count=int(counts[0]),
        chunk_count=int(counts[1]),
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
) -> Datastore:
    row = conn.execute(
        "INSERT INTO public.datastores AS d (user_id, name, description, type, config,"
        " similarity_metric, similarity_threshold, max_results)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (
            user_id,
            name,
            description,
            type,
            Jsonb(config.to_json()),
            metric.value,
            similarity_threshold,
            max_results,
        ),
    ).fetchone()
    assert row is not None
    return _from_row(row)


def get(
    conn: psycopg.Connection, datastore_id: UUID, *, counts: bool = False, lock: bool = False
) -> Datastore | None:
    query = f"SELECT {_COLUMNS}{_COUNTS if counts else ''} FROM public.datastores d WHERE d.id = %s"
    if lock:
        query += " FOR UPDATE"
    row = conn.execute(query, (datastore_id,)).fetchone()
    return _from_row(row) if row else None


def get_many(
    conn: psycopg.Connection, datastore_ids: list[UUID], *, counts: bool = False
) -> list[Datastore]:
    rows = conn.execute(
        f"SELECT {_COLUMNS}{_COUNTS if counts else ''} FROM public.datastores d"
        " WHERE d.id = ANY(%s)",
        (datastore_ids,),
    ).fetchall()
    return [_from_row(r) for r in rows]


def list_page(
    conn: psycopg.Connection, user_id: UUID | None, limit: int, token: str
) -> Page[Datastore]:
    """Datastores by (created_at, id); all of them when user_id is None."""
    where = []
    params: list[Any] = []
    if user_id is not None:
        where.append("d.user_id = %s")
        params.append(user_id)
    after = decode_token(token, KEYSET_CREATED_ID)
    if after is not None:
        where.append("(d.created_at, d.id) > (%s::timestamptz, %s::uuid)")
        params.extend(after)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS}{_COUNTS} FROM public.datastores d {clause}"
        " ORDER BY d.created_at, d.id LIMIT %s",
        [*params, limit + 1],
    ).fetchall()
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
    ) + sql.SQL(_COLUMNS + _COUNTS)
    row = conn.execute(query, {**values, "_id": datastore_id}).fetchone()
    assert row is not None
    return _from_row(row)


def delete(conn: psycopg.Connection, datastore_id: UUID) -> bool:
    return conn.execute("DELETE FROM public.datastores WHERE id = %s", (datastore_id,)).rowcount > 0
