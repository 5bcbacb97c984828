"""Rows of ``public.agents`` and ``public.agent_datastores``."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, class_row, dict_row

from service.models import Agent, AgentDatastoreLink, Page
from service.storage.pagination import KEYSET_CREATED_ID, decode_token, encode_token

_COLUMNS = sql.SQL(
    "id, user_id, name, description, system_instructions, assistant_instructions, active,"
    " created_at, updated_at"
)
# Links as they are stored: every column not null, of the type the model names.
_LINKS = class_row(AgentDatastoreLink)


def _from_row(row: DictRow) -> Agent:
    # Agentopia's own rows may hold NULL texts.
    return Agent(
        id=UUID(str(row["id"])),
        user_id=UUID(str(row["user_id"])),
        name=row["name"],
        description=row["description"] or "",
        system_instructions=row["system_instructions"] or "",
        assistant_instructions=row["assistant_instructions"] or "",
        active=bool(row["active"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
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
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            sql.SQL(
                "INSERT INTO public.agents (user_id, name, description, system_instructions,"
                " assistant_instructions, active) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {}"
            ).format(_COLUMNS),
            (user_id, name, description, system_instructions, assistant_instructions, active),
        )
        .fetchone()
    )
    assert row is not None
    return _from_row(row)


def get(conn: psycopg.Connection, agent_id: UUID) -> Agent | None:
    query = sql.SQL("SELECT {} FROM public.agents WHERE id = %s").format(_COLUMNS)
    row = conn.cursor(row_factory=dict_row).execute(query, (agent_id,)).fetchone()
    return _from_row(row) if row else None


def list_page(
    conn: psycopg.Connection, user_id: UUID | None, limit: int, token: str
) -> Page[Agent]:
    where: list[sql.Composable] = []
    params: list[Any] = []
    if user_id is not None:
        where.append(sql.SQL("user_id = %s"))
        params.append(user_id)
    after = decode_token(token, KEYSET_CREATED_ID)
    if after is not None:
        where.append(sql.SQL("(created_at, id) > (%s::timestamptz, %s::uuid)"))
        params.extend(after)
    clause = sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
    query = sql.SQL("SELECT {} FROM public.agents {} ORDER BY created_at, id LIMIT %s").format(
        _COLUMNS, clause
    )
    rows = conn.cursor(row_factory=dict_row).execute(query, [*params, limit + 1]).fetchall()
    items = [_from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items, encode_token([items[-1].created_at, items[-1].id]) if more else "")


def delete(conn: psycopg.Connection, agent_id: UUID) -> bool:
    return conn.execute("DELETE FROM public.agents WHERE id = %s", (agent_id,)).rowcount > 0


def attach(conn: psycopg.Connection, agent_id: UUID, datastore_id: UUID) -> AgentDatastoreLink:
    """Link the two (idempotent: an existing link is returned as it is)."""
    cur = conn.cursor(row_factory=_LINKS)
    link = cur.execute(
        "INSERT INTO public.agent_datastores (agent_id, datastore_id) VALUES (%s, %s)"
        " ON CONFLICT (agent_id, datastore_id) DO NOTHING"
        " RETURNING id, agent_id, datastore_id, created_at",
        (agent_id, datastore_id),
    ).fetchone()
    if link is None:
        link = cur.execute(
            "SELECT id, agent_id, datastore_id, created_at FROM public.agent_datastores"
            " WHERE agent_id = %s AND datastore_id = %s",
            (agent_id, datastore_id),
        ).fetchone()
    assert link is not None
    return link


def detach(conn: psycopg.Connection, agent_id: UUID, datastore_id: UUID) -> bool:
    return (
        conn.execute(
            "DELETE FROM public.agent_datastores WHERE agent_id = %s AND datastore_id = %s",
            (agent_id, datastore_id),
        ).rowcount
        > 0
    )


def links(conn: psycopg.Connection, agent_id: UUID) -> list[AgentDatastoreLink]:
    return (
        conn.cursor(row_factory=_LINKS)
        .execute(
            "SELECT id, agent_id, datastore_id, created_at FROM public.agent_datastores"
            " WHERE agent_id = %s ORDER BY created_at, id",
            (agent_id,),
        )
        .fetchall()
    )
