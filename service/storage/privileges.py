"""Keep the service's own objects out of reach of Supabase's Data API roles.

Supabase grants ``anon``, ``authenticated`` and ``service_role`` every privilege on each
new table, sequence and function in ``public`` (``ALTER DEFAULT PRIVILEGES``), and its
Data API serves ``public``: without this, the public anon key would read every tenant's
chunks and could insert an API key. So every service object (a table, partition, view,
sequence or function in ``public`` named ``retrieval_*`` or ``datastore_*``, any
partition or sequence belonging to one) gets:

- those roles' and PUBLIC's privileges revoked, and
- row level security enabled with no policy (tables and partitions), so a privilege
  granted again by mistake still shows no row. RLS on a partitioned parent does not
  apply when a partition is named directly, hence every partition gets its own.

The service connects as the owner of its tables (or a BYPASSRLS role), which RLS does
not restrict; :func:`lock_down` refuses to start when that is not so. It runs after every
``migrate`` (idempotent, so tables a later migration adds are covered) and
:func:`lock_down_relation` runs for each partition as the service creates it (default
privileges apply to those too). In steady state it only reads the catalog: nothing is
altered, so no lock is taken on a table that is already locked down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from service.errors import FailedPrecondition

_log = logging.getLogger(__name__)

# The roles PostgREST (Supabase's Data API) switches to, and the role of its secret key.
API_ROLES = ("anon", "authenticated", "service_role")
# Agentopia's tables the service reads; they keep Agentopia's own RLS (never weakened).
AGENTOPIA_TABLES = ("public.agents", "public.datastores", "public.agent_datastores")

# Relations and functions of the service: by name, then whatever inherits from or
# belongs to them (partitions with any name, sequences owned by a column). Members of
# an extension (pgvector's functions in public) are never touched.
_RELATIONS = """
WITH RECURSIVE own (oid) AS (
    SELECT c.oid FROM pg_catalog.pg_class c
    WHERE c.relnamespace = 'public'::regnamespace
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND (c.relname LIKE 'retrieval\\_%%' OR c.relname LIKE 'datastore\\_%%')
    UNION
    SELECT part.oid FROM own CROSS JOIN LATERAL (
        SELECT i.inhrelid AS oid FROM pg_catalog.pg_inherits i WHERE i.inhparent = own.oid
        UNION ALL
        SELECT d.objid FROM pg_catalog.pg_depend d
        WHERE d.refobjid = own.oid AND d.classid = 'pg_class'::regclass
          AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    ) AS part
)
SELECT 'public.' || quote_ident(c.relname) AS name, c.relkind AS kind,
       c.relkind IN ('r', 'p') AND NOT c.relrowsecurity AS needs_rls,
       EXISTS (
           SELECT 1 FROM pg_catalog.aclexplode(c.relacl) a
           WHERE a.grantee = 0 OR a.grantee = ANY (%(grantees)s::oid[])
       ) AS needs_revoke
FROM pg_catalog.pg_class c
WHERE c.oid IN (SELECT oid FROM own) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend e
      WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e')
ORDER BY 1
"""

# A NULL proacl means the default: EXECUTE for PUBLIC.
_FUNCTIONS = """
SELECT format('public.%%I(%%s)', p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid))
FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'public'::regnamespace
  AND (p.proname LIKE 'retrieval\\_%%' OR p.proname LIKE 'datastore\\_%%')
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend e
      WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')
  AND (p.proacl IS NULL OR EXISTS (
      SELECT 1 FROM pg_catalog.aclexplode(p.proacl) a
      WHERE a.grantee = 0 OR a.grantee = ANY (%(grantees)s::oid[])))
ORDER BY 1
"""

# Tables whose rows the service must see in full, and whether it does: RLS restricts
# neither a superuser, nor a BYPASSRLS role, nor the owner (or a member of the owner).
_UNREACHABLE = """
SELECT c.oid::regclass::text AS name
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_roles r ON r.rolname = current_user
WHERE c.oid IN (SELECT to_regclass(t) FROM unnest(%(tables)s::text[]) AS t)
  AND c.relrowsecurity
  AND NOT (r.rolsuper OR r.rolbypassrls OR pg_catalog.pg_has_role(c.relowner, 'USAGE'))
ORDER BY 1
"""


@dataclass(frozen=True)
class _Relation:
    name: str
    kind: str
    needs_rls: bool
    needs_revoke: bool


def _grantees(conn: psycopg.Connection) -> tuple[list[int], sql.Composable]:
    """The API roles present in this cluster: their oids, and PUBLIC plus their names."""
    rows = conn.execute(
        "SELECT oid, rolname FROM pg_catalog.pg_roles WHERE rolname = ANY (%s) ORDER BY rolname",
        (list(API_ROLES),),
    ).fetchall()
    names = [sql.SQL("PUBLIC"), *(sql.Identifier(name) for _, name in rows)]
    return [int(oid) for oid, _ in rows], sql.SQL(", ").join(names)


def _apply(conn: psycopg.Connection, rel: _Relation, grantees: sql.Composable) -> None:
    # The name comes from the catalog, quoted there (quote_ident).
    target = sql.SQL(rel.name)
    if rel.needs_rls:
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(target))
    if rel.needs_revoke:
        kind = sql.SQL("SEQUENCE" if rel.kind == "S" else "TABLE")
        conn.execute(sql.SQL("REVOKE ALL ON {} {} FROM {}").format(kind, target, grantees))


def check_reach(conn: psycopg.Connection) -> None:
    """Refuse to run as a role that RLS would silently restrict on the tables it reads.

    Raises:
        FailedPrecondition: naming the tables and what the connecting role needs.
    """
    tables = [
        *AGENTOPIA_TABLES,
        "public.retrieval_schema_migrations",
        "public.retrieval_api_keys",
        "public.datastore_documents",
        "public.datastore_chunks",
    ]
    blind = [row[0] for row in conn.execute(_UNREACHABLE, {"tables": tables}).fetchall()]
    if blind:
        raise FailedPrecondition(
            f"row level security hides rows of {', '.join(blind)} from the role the service "
            "connects as: connect as the owner of these tables or a role with BYPASSRLS "
            "(docs/security.md, 'Deploying inside Supabase')"
        )


def lock_down(conn: psycopg.Connection) -> int:
    """Revoke the API roles' privileges and enable RLS on every service object.

    Idempotent; returns how many objects it changed. ``conn`` must be the owner's.
    Raises FailedPrecondition when the connecting role cannot see every row it needs.
    """
    oids, grantees = _grantees(conn)
    changed = 0
    with conn.cursor(row_factory=class_row(_Relation)) as cur:
        relations = cur.execute(_RELATIONS, {"grantees": oids}).fetchall()
    for rel in relations:
        if rel.needs_rls or rel.needs_revoke:
            try:
                _apply(conn, rel, grantees)
            except psycopg.errors.InsufficientPrivilege as e:
                raise FailedPrecondition(
                    f"cannot lock {rel.name} down against the Data API roles: the service "
                    "must connect as the owner of its tables (docs/security.md)"
                ) from e
            changed += 1
    functions = conn.execute(_FUNCTIONS, {"grantees": oids}).fetchall()
    for (name,) in functions:
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM {}").format(sql.SQL(name), grantees))
        changed += 1
    check_reach(conn)
    if changed:
        _log.info("locked down %d service objects against the Data API roles", changed)
    return changed


def lock_down_relation(conn: psycopg.Connection, name: str) -> None:
    """Lock down one table the service just created (``public.<name>``), e.g. a partition."""
    _, grantees = _grantees(conn)
    target = sql.SQL("public.{}").format(sql.Identifier(name))
    conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(target))
    conn.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(target, grantees))
