"""Who is calling: API keys (created here, shown once, stored as SHA-256) and, when
configured, Supabase access tokens (service/core/jwt_auth.py)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from service.core.jwt_auth import TokenVerifier
from service.core.lookup_cache import LookupCache
from service.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from service.models import Principal, Role
from service.storage import users
from service.storage.database import Database

KEY_PREFIX = "agr_"
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
MAX_KEY_LIFETIME = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` or ``45s`` as a timedelta (positive, at most ten years)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidArgument(
            f"duration {text!r} must be a whole number with a unit s, m, h or d (e.g. 90d)"
        )
    duration = timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    if duration > MAX_KEY_LIFETIME:
        raise InvalidArgument(f"duration {text!r} is longer than ten years")
    return duration


def hash_key(key: str) -> bytes:
    # Keys are 256-bit random secrets, so a fast hash is enough (no password stretching).
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class IssuedKey:
    key: str  # the only time the full key exists outside the caller
    key_id: UUID
    user_id: UUID
    role: Role
    expires_at: datetime | None = None

    @property
    def prefix(self) -> str:
        return self.key[: len(KEY_PREFIX) + 8]


class Identity:
    """Users, API keys and (when configured) Supabase access tokens over the database."""

    def __init__(
        self, db: Database, lookups: LookupCache, tokens: TokenVerifier | None = None
    ) -> None:
        self._db = db
        self._lookups = lookups
        self._tokens = tokens

    def authenticate(self, credential: str) -> Principal:
        """The caller behind an ``agr_`` API key or a Supabase access token."""
        if credential.startswith(KEY_PREFIX):
            return self._api_key(credential)
        if self._tokens is None:
            raise Unauthenticated(
                "unknown credential: expected an API key starting with 'agr_' "
                "(this server accepts no Supabase access tokens)"
            )
        subject = self._tokens.verify(credential)
        if not self._lookups.user_exists(subject.user_id):
            raise Unauthenticated("access token subject is not a known user")
        return Principal(user_id=subject.user_id, role=subject.role)

    def _api_key(self, credential: str) -> Principal:
        record = self._lookups.api_key(hash_key(credential))
        if record is None:
            raise Unauthenticated("unknown or revoked API key")
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            raise Unauthenticated("API key expired")
        return record.principal

    def create_user(self, email: str | None) -> UUID:
        with self._db.connection() as conn:
            if email and users.find_user(conn, email):
                raise AlreadyExists(f"a user with email {email!r} already exists")
            return users.create_user(conn, email)

    def find_user(self, email: str) -> UUID:
        with self._db.connection() as conn:
            user_id = users.find_user(conn, email)
        if user_id is None:
            raise NotFound(f"no user with email {email!r}")
        return user_id

    def create_key(
        self, user_id: UUID, role: Role, name: str = "", *, expires_in: timedelta | None = None
    ) -> IssuedKey:
        """A new key for ``user_id``; with ``expires_in``, refused once that time has passed."""
        if expires_in is not None and not timedelta(0) < expires_in <= MAX_KEY_LIFETIME:
            raise InvalidArgument("a key's lifetime must be positive and at most ten years")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._db.connection() as conn:
            if not users.user_exists(conn, user_id):
                raise NotFound(f"no user {user_id}")
            key_id, expires_at = users.insert_api_key(
                conn,
                user_id,
                name=name,
                prefix=key[: len(KEY_PREFIX) + 8],
                key_hash=hash_key(key),
                role=role,
                expires_in=expires_in,
            )
        return IssuedKey(key, key_id, user_id, role, expires_at)

    def revoke_key(self, prefix: str) -> int:
        with self._db.connection() as conn:
            revoked = users.revoke_api_key(conn, prefix)
        self._lookups.invalidate()
        return revoked
