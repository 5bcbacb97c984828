"""Users (``auth.users``) and API keys (stored as SHA-256 hashes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from service.models import Principal, Role


def create_user(conn: psycopg.Connection, email: str | None) -> UUID:
    row = conn.execute(
        "INSERT INTO auth.users (email) VALUES (%s) RETURNING id", (email,)
    ).fetchone()
    assert row is not None
    return UUID(str(row[0]))


def find_user(conn: psycopg.Connection, email: str) -> UUID | None:
    row = conn.execute("SELECT id FROM auth.users WHERE email = %s", (email,)).fetchone()
    return UUID(str(row[0])) if row else None


def user_exists(conn: psycopg.Connection, user_id: UUID) -> bool:
    return conn.execute("SELECT 1 FROM auth.users WHERE id = %s", (user_id,)).fetchone() is not None


def insert_api_key(
    conn: psycopg.Connection,
    user_id: UUID,
    *,
    name: str,
    prefix: str,
    key_hash: bytes,
    role: Role,
    expires_in: timedelta | None = None,
) -> tuple[UUID, datetime | None]:
    """Store a key; returns its id and expiry (the database's clock + ``expires_in``)."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "INSERT INTO public.retrieval_api_keys"
            " (user_id, name, prefix, key_hash, role, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, now() + %s::interval) RETURNING id, expires_at",
            (user_id, name, prefix, key_hash, role.value, expires_in),
        )
        .fetchone()
    )
    assert row is not None
    return UUID(str(row["id"])), row["expires_at"]


@dataclass(frozen=True)
class KeyRecord:
    """An unrevoked API key: who it speaks for, and until when (None = no expiry)."""

    principal: Principal
    expires_at: datetime | None


def key_record(conn: psycopg.Connection, key_hash: bytes) -> KeyRecord | None:
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT id, user_id, role, expires_at FROM public.retrieval_api_keys"
            " WHERE key_hash = %s AND revoked_at IS NULL",
            (key_hash,),
        )
        .fetchone()
    )
    if row is None:
        return None
    principal = Principal(
        user_id=UUID(str(row["user_id"])), role=Role(row["role"]), key_id=UUID(str(row["id"]))
    )
    return KeyRecord(principal, row["expires_at"])


def revoke_api_key(conn: psycopg.Connection, prefix: str) -> int:
    cur = conn.execute(
        "UPDATE public.retrieval_api_keys SET revoked_at = now()"
        " WHERE prefix = %s AND revoked_at IS NULL",
        (prefix,),
    )
    return cur.rowcount
