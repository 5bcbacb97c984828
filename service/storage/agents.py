"""Rows of ``public.agents`` and ``public.agent_datastores``."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from service.models import Agent, AgentDatastoreLink, Page
from service.storage.pagination import KEYSET_CREATED_ID, decode_token, encode_token

_COLUMNS = (
    "id, user_id, name, description, system_instructions, assistant_instructions, active,"
    " created_at, updated_at"
)


def _from_row(row: tuple[Any, ...]) -> Agent:
    return Agent(
        id=UUID(str(row[0])),
        user_id=UUID(str(row[1])),
        name=row[2],
        description=row[3] or "",
        system_instructions=row[4] or "",
        assistant_instructions=row[5] or "",
        active=bool(row[6]),
        created_at=row[7],
        updated_at=row[8],
    )


def _link(row: tuple[Any, ...]) -> AgentDatastoreLink:
    return AgentDatastoreLink(
        id=UUID(str(row[0])),
        agent_id=UUID(str(row[1])),
        datastore_id=UUID(str(row[2])),
        created_at=row[3],
    )


def insert(
    conn: psycopg.Connection,
    *,
    user_id: UUID,
    name: str,
    description: str,
    system_instructions: str,
    assistant_instructions: str,
    active: bool,
) -> Agent:
    row = conn.execute(
        "INSERT INTO public.agents (user_id, name, description, system_instructions,"
        f" assistant_instructions, active) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (user_id, name, description, system_instructions, assistant_instructions, active),
    ).fetchone()
    assert row is not None
    return _from_row(row)


def get(conn: psycopg.Connection, agent_id: UUID) -> Agent | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM public.agents WHERE id = %s", (agent_id,)
    ).fetchone()
    return _from_row(row) if row else None


def list_page(
    conn: psycopg.Connection, user_id: UUID | None, limit: int, token: str
) -> Page[Agent]:
    where = []
    params: list[Any] = []
    if user_id is not None:
        where.append("user_id = %s")
        params.append(user_id)
    after = decode_token(token, KEYSET_CREATED_ID)
    if after is not None:
        where.append("(created_at, id) > (%s::timestamptz, %s::uuid)")
        params.extend(after)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM public.agents {clause} ORDER BY created_at, id LIMIT %s",
        [*params, limit + 1],
    ).fetchall()
    items = [_from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items, encode_token([items[-1].created_at, items[-1].id]) if more else "")


def delete(conn: psycopg.Connection, agent_id: UUID) -> bool:
    return conn.execute("DELETE FROM public.agents WHERE id = %s", (agent_id,)).rowcount > 0


def attach(conn: psycopg.Connection, agent_id: UUID, datastore_id: UUID) -> AgentDatastoreLink:
    """Link the two (idempotent: an existing link is returned as it is)."""
    row = conn.execute(
        "INSERT INTO public.agent_datastores (agent_id, datastore_id) VALUES (%s, %s)"
        " ON CONFLICT (agent_id, datastore_id) DO NOTHING"
        " RETURNING id, agent_id, datastore_id, created_at",
        (agent_id, datastore_id),
    ).fetchone()
    if row is None:
        row = conn.execute(
            "SELECT id, agent_id, datastore_id, created_at FROM public.agent_datastores"
            " WHERE agent_id = %s AND datastore_id = %s",
            (agent_id, datastore_id),
        ).fetchone()
    assert row is not None
    return _link(row)


def detach(conn: psycopg.Connection, agent_id: UUID, datastore_id: UUID) -> bool:
    return (
        conn.execute(
            "DELETE FROM public.agent_datastores WHERE agent_id = %s AND datastore_id = %s",
            (agent_id, datastore_id),
        ).rowcount
        > 0
    )


def links(conn: psycopg.Connection, agent_id: UUID) -> list[AgentDatastoreLink]:
    rows = conn.execute(
        "SELECT id, agent_id, datastore_id, created_at FROM public.agent_datastores"
        " WHERE agent_id = %s ORDER BY created_at, id",
        (agent_id,),
    ).fetchall()
    return [_link(r) for r in rows]
