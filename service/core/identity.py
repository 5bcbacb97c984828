"""API keys: creation (shown once, stored as SHA-256) and authentication."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from uuid import UUID

from service.core.lookup_cache import LookupCache
from service.errors import InvalidArgument, NotFound, Unauthenticated
from service.models import Principal, Role
from service.storage import users
from service.storage.database import Database

KEY_PREFIX = "agr_"


def hash_key(key: str) -> bytes:
    # Keys are 256-bit random secrets, so a fast hash is enough (no password stretching).
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class IssuedKey:
    key: str  # the only time the full key exists outside the caller
    key_id: UUID
    user_id: UUID
    role: Role

    @property
    def prefix(self) -> str:
        return self.key[: len(KEY_PREFIX) + 8]


class Identity:
    """Users and API keys over the database."""

    def __init__(self, db: Database, lookups: LookupCache) -> None:
        self._db = db
        self._lookups = lookups

    def authenticate(self, credential: str) -> Principal:
        if not credential.startswith(KEY_PREFIX):
            raise Unauthenticated("unknown credential: expected an API key starting with 'agr_'")
        principal = self._lookups.principal(hash_key(credential))
        if principal is None:
            raise Unauthenticated("unknown or revoked API key")
        return principal

    def create_user(self, email: str | None) -> UUID:
        with self._db.connection() as conn:
            if email and users.find_user(conn, email):
                raise InvalidArgument(f"a user with email {email!r} already exists")
            return users.create_user(conn, email)

    def find_user(self, email: str) -> UUID:
        with self._db.connection() as conn:
            user_id = users.find_user(conn, email)
        if user_id is None:
            raise NotFound(f"no user with email {email!r}")
        return user_id

    def create_key(self, user_id: UUID, role: Role, name: str = "") -> IssuedKey:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._db.connection() as conn:
            if not users.user_exists(conn, user_id):
                raise NotFound(f"no user {user_id}")
            key_id = users.insert_api_key(
                conn,
                user_id,
                name=name,
                prefix=key[: len(KEY_PREFIX) + 8],
                key_hash=hash_key(key),
                role=role,
            )
        return IssuedKey(key, key_id, user_id, role)

    def revoke_key(self, prefix: str) -> int:
        with self._db.connection() as conn:
            revoked = users.revoke_api_key(conn, prefix)
        self._lookups.invalidate()
        return revoked
