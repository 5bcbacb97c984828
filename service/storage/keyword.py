"""The keyword index a partition keeps for keyword search (:mod:`keyword_search`).

Migration 0002 gives every chunk a generated ``tsv`` (the datastore's text search
configuration over its content) and ``tsv_length`` (its token count), a GIN index
per partition, and per-datastore statistics kept exact by triggers:
``datastore_keyword_stats`` (chunk count, total tokens) and
``datastore_keyword_terms`` (how many chunks hold each lexeme).
"""

from __future__ import annotations

from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from service.models import DEFAULT_TEXT_SEARCH_CONFIG
from service.storage.partitions import partition_name


def _regclass(datastore_id: UUID) -> str:
    return f"public.{partition_name(datastore_id)}"


def resolve_text_config(conn: psycopg.Connection, name: str) -> str | None:
    """The canonical name of text search configuration ``name`` (pg_ts_config), or None."""
    row = conn.execute(
        "SELECT c.oid::regconfig::text FROM pg_catalog.pg_ts_config c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.cfgnamespace"
        " CROSS JOIN (SELECT %(name)s::text AS exact, lower(%(name)s::text) AS folded) q"
        " WHERE (c.cfgname::text IN (q.exact, q.folded)"
        "        AND pg_catalog.pg_ts_config_is_visible(c.oid))"
        "    OR n.nspname || '.' || c.cfgname IN (q.exact, q.folded)"
        " ORDER BY c.cfgname::text = q.exact DESC LIMIT 1",
        {"name": name},
    ).fetchone()
    return str(row[0]) if row else None


def install(conn: psycopg.Connection, datastore_id: UUID, text_config: str) -> None:
    """A new partition's text search configuration, GIN index and statistics triggers."""
    if text_config != DEFAULT_TEXT_SEARCH_CONFIG:
        configure(conn, datastore_id, text_config)  # cheap while the partition is empty
    conn.execute(
        "SELECT public.datastore_keyword_install(%s::regclass, %s)",
        (_regclass(datastore_id), datastore_id),
    )


def configure(conn: psycopg.Connection, datastore_id: UUID, text_config: str) -> None:
    """Re-derive the partition's tsvectors in ``text_config`` and recompute its statistics."""
    conn.execute(
        "SELECT public.datastore_keyword_configure(%s::regclass, %s, %s::regconfig)",
        (_regclass(datastore_id), datastore_id, text_config),
    )


def stats(conn: psycopg.Connection, datastore_id: UUID) -> tuple[int, int, dict[str, int]]:
    """(chunk count, total tokens, chunk frequency per lexeme): for checks and tests."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT chunk_count, token_count FROM public.datastore_keyword_stats"
            " WHERE datastore_id = %s",
            (datastore_id,),
        ).fetchone()
        terms = cur.execute(
            "SELECT lexeme, chunk_freq FROM public.datastore_keyword_terms WHERE datastore_id = %s",
            (datastore_id,),
        ).fetchall()
    chunks, tokens = (int(row["chunk_count"]), int(row["token_count"])) if row else (0, 0)
    return chunks, tokens, {str(t["lexeme"]): int(t["chunk_freq"]) for t in terms}
