"""Versioned SQL migrations: ``migrations/NNNN_name.sql`` applied once each, in order."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import psycopg

from service.storage import privileges

_log = logging.getLogger(__name__)

# Any constant works; it only keeps two starting replicas from migrating at once.
_ADVISORY_LOCK_KEY = 0x5245545249455641


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The migrations shipped with the package, sorted by version."""
    found = []
    for entry in resources.files("service.storage").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def migrate(conninfo: str) -> list[Migration]:
    """Apply every pending migration, each in its own transaction, then lock the service's
    objects down against Supabase's Data API roles (storage/privileges.py). Returns the
    migrations applied.
    """
    applied: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS public.retrieval_schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            privileges.check_reach(conn)  # a blinded role would re-apply everything
            done = {
                row[0]
                for row in conn.execute("SELECT version FROM public.retrieval_schema_migrations")
            }
            for migration in available_migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO public.retrieval_schema_migrations (version, name)"
                        " VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                _log.info("applied migration %04d_%s", migration.version, migration.name)
                applied.append(migration)
            # After every migrate, not as a migration: covers tables later ones add.
            with conn.transaction():
                privileges.lock_down(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    return applied
