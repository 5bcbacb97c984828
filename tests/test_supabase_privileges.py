"""Inside a Supabase database, nothing of the service is reachable by the Data API roles.

A fresh database on the session's server gets Supabase's roles and default privileges
(as Supabase's own setup does: every new table, sequence and function in ``public``
granted to anon, authenticated and service_role) *before* the service migrates into it
as a plain owner role (no superuser, no BYPASSRLS). Every service object is then found
in the catalog, not listed by hand, so tables that later migrations add are covered.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from service.app import App
from service.core.agents import AgentFields
from service.core.datastore_config import ConfigRequest
from service.core.datastores import DatastoreFields
from service.errors import FailedPrecondition
from service.models import ChunkInput, DocumentInput, Principal, Role
from service.query_models import QuerySpec
from service.settings import Settings
from service.storage.migrations import migrate
from service.storage.partitions import partition_name
from tests.helpers.paths import MODEL_CACHE
from tests.helpers.supabase_sql import (
    AGENTOPIA_SCHEMA,
    CATALOG_FUNCTIONS,
    CATALOG_RELATIONS,
    SUPABASE_SETUP,
)

API_ROLES = ("anon", "authenticated", "service_role")
AGENTOPIA = {"public.agents", "public.datastores", "public.agent_datastores", "auth.users"}


@dataclass
class SupabaseDb:
    admin_url: str  # superuser, this database
    owner_url: str  # the role the service connects as
    app: App
    alice: Principal
    bob: Principal
    alice_datastore: uuid.UUID
    bob_datastore: uuid.UUID
    alice_agent: uuid.UUID


def _roles(admin: psycopg.Connection) -> None:
    for role in API_ROLES:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if exists is None:
            bypass = sql.SQL(" BYPASSRLS" if role == "service_role" else "")
            admin.execute(
                sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT{}").format(sql.Identifier(role), bypass)
            )


def _user(app: App) -> Principal:
    return Principal(app.identity.create_user(f"{uuid.uuid4().hex}@test"), Role.USER)


def _populate(app: App, who: Principal, rng: np.random.Generator) -> uuid.UUID:
    """A vector datastore with one chunk, made through the service's own core code."""
    fields = DatastoreFields(
        name="private", config=ConfigRequest({"embedding_model": "none", "dimensions": 4})
    )
    datastore = app.datastores.create(who, fields)
    vector = rng.random(4, dtype=np.float32)
    doc = DocumentInput(external_id="secret", chunks=(ChunkInput("secret text", vector),))
    app.ingestion.ingest(who, datastore.id, [doc])
    return datastore.id


@pytest.fixture(scope="module")
def supa(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupabaseDb]:
    name = f"supa_{uuid.uuid4().hex[:12]}"
    owner = f"retrieval_owner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        _roles(admin)
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner)
            )
        )
    admin_url = make_conninfo(pg_url, dbname=name)
    owner_url = make_conninfo(pg_url, dbname=name, user=owner)
    app = None
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("CREATE EXTENSION vector")  # an extension needs a superuser
            admin.execute(sql.SQL(SUPABASE_SETUP).format(owner=sql.Identifier(owner)))
        settings = Settings(
            database_url=owner_url,
            data_dir=tmp_path_factory.mktemp("supa"),
            create_local_key=False,
            onnx_cache_dir=MODEL_CACHE,
        )
        app = App.open(settings, load_models=False)
        rng = np.random.default_rng(7)
        alice, bob = _user(app), _user(app)
        alice_ds, bob_ds = _populate(app, alice, rng), _populate(app, bob, rng)
        agent = app.agents.create(alice, AgentFields(name="helper"))
        app.agents.attach(alice, agent.id, alice_ds)
        yield SupabaseDb(admin_url, owner_url, app, alice, bob, alice_ds, bob_ds, agent.id)
    finally:
        if app is not None:
            app.close()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(owner)))


def _refused(conn: psycopg.Connection, role: str, statement: sql.Composed | sql.SQL | str) -> bool:
    """Run ``statement`` as ``role``; True when refused for lack of privilege."""
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            conn.execute(statement)
            raise _RolledBack
    except psycopg.errors.InsufficientPrivilege:
        return True
    except _RolledBack:
        return False


class _RolledBack(Exception):
    """Raised inside a transaction to undo a statement that was allowed."""


def _service_relations(admin: psycopg.Connection) -> list[tuple[str, str]]:
    rows = admin.execute(CATALOG_RELATIONS).fetchall()
    return [(name, kind) for name, kind in rows if name not in AGENTOPIA]


def test_the_catalog_holds_every_kind_of_service_object(supa: SupabaseDb) -> None:
    """The enumeration below is not vacuous: keys, documents, chunks, partitions, ..."""
    with psycopg.connect(supa.admin_url) as admin:
        names = {name for name, _ in _service_relations(admin)}
        functions = {row[1] for row in admin.execute(CATALOG_FUNCTIONS).fetchall()}
    for datastore in (supa.alice_datastore, supa.bob_datastore):
        assert f"public.{partition_name(datastore)}" in names
    assert {
        "public.retrieval_api_keys",
        "public.retrieval_schema_migrations",
        "public.datastore_documents",
        "public.datastore_chunks",
        "public.datastore_chunks_id_seq",
        "public.datastore_keyword_terms",
    } <= names
    assert {"public.retrieval_notify_change", "public.datastore_keyword_add_chunks"} <= functions


@pytest.mark.parametrize("role", API_ROLES)
def test_no_api_role_reaches_any_service_table_or_sequence(supa: SupabaseDb, role: str) -> None:
    with psycopg.connect(supa.admin_url) as admin:
        for name, kind in _service_relations(admin):
            target = sql.SQL(name)
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                allowed = admin.execute(
                    "SELECT has_table_privilege(%s, %s, %s)", (role, name, privilege)
                ).fetchone()
                assert allowed == (False,), f"{role} has {privilege} on {name}"
            if kind == "S":
                attempts = [
                    sql.SQL("SELECT nextval({})").format(sql.Literal(name)),
                    sql.SQL("SELECT setval({}, 1)").format(sql.Literal(name)),
                    sql.SQL("SELECT last_value FROM {}").format(target),
                ]
            else:
                attempts = [
                    sql.SQL("SELECT * FROM {}").format(target),
                    sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target),
                    sql.SQL("DELETE FROM {}").format(target),
                    sql.SQL("TRUNCATE {}").format(target),
                ]
                column = admin.execute(
                    "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %s::regclass"
                    " AND attnum > 0 AND NOT attisdropped AND attgenerated = '' LIMIT 1",
                    (name,),
                ).fetchone()
                assert column is not None
                attempts.append(
                    sql.SQL("UPDATE {} SET {} = {}").format(
                        target, sql.SQL(column[0]), sql.SQL(column[0])
                    )
                )
            for attempt in attempts:
                assert _refused(admin, role, attempt), f"{role}: {attempt.as_string(admin)}"


@pytest.mark.parametrize("role", API_ROLES)
def test_no_api_role_executes_any_service_function(supa: SupabaseDb, role: str) -> None:
    with psycopg.connect(supa.admin_url) as admin:
        functions = admin.execute(CATALOG_FUNCTIONS).fetchall()
        assert functions
        for oid, name, types, is_trigger in functions:
            allowed = admin.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, oid))
            assert allowed.fetchone() == (False,), f"{role} may execute {name}"
            if not is_trigger:  # a trigger function cannot be called directly at all
                assert _refused(admin, role, _call(name, types)), f"{role} executed {name}"


def _call(name: str, types: list[str]) -> sql.Composed:
    """A call the planner cannot fold away (a strict function of a NULL constant would be):
    its arguments come from a subquery kept apart by OFFSET 0."""
    columns = [sql.Identifier(f"a{i}") for i in range(len(types))]
    nulls = [
        sql.SQL("NULL::{} AS {}").format(sql.SQL(t), c) for t, c in zip(types, columns, strict=True)
    ]
    return sql.SQL("SELECT {}({}) FROM (SELECT {} OFFSET 0) AS v").format(
        sql.SQL(name),
        sql.SQL(", ").join(sql.SQL("v.{}").format(c) for c in columns),
        sql.SQL(", ").join(nulls) if nulls else sql.SQL("1"),
    )


def test_rls_hides_rows_even_if_a_privilege_is_granted_again(supa: SupabaseDb) -> None:
    """The second layer: every table and partition has RLS on with no policy."""
    with psycopg.connect(supa.admin_url) as admin:
        relations = _service_relations(admin)
        for name, kind in relations:
            if kind in ("r", "p"):
                row = admin.execute(
                    "SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (name,)
                ).fetchone()
                assert row == (True,), f"{name} has no row level security"
        partition = sql.Identifier(partition_name(supa.alice_datastore))
        with admin.transaction(force_rollback=True):
            admin.execute(sql.SQL("GRANT SELECT ON public.{} TO authenticated").format(partition))
            admin.execute("SET LOCAL ROLE authenticated")
            count = admin.execute(sql.SQL("SELECT count(*) FROM public.{}").format(partition))
            assert count.fetchone() == (0,)
        owner_sees = admin.execute(sql.SQL("SELECT count(*) FROM public.{}").format(partition))
        assert owner_sees.fetchone() == (1,)


def test_the_service_still_reads_and_writes_everything(supa: SupabaseDb) -> None:
    """The service connects as the plain owner role: RLS does not restrict it."""
    result = supa.app.retrieval.query(
        supa.alice,
        QuerySpec(agent_id=supa.alice_agent, vector=np.ones(4, dtype=np.float32)),
    )
    assert [hit.content for hit in result.hits] == ["secret text"]
    with psycopg.connect(supa.owner_url) as owner:
        row = owner.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        assert row.fetchone() == (False, False)
    assert migrate(supa.owner_url) == []  # idempotent


def test_a_table_added_later_is_locked_down_by_the_next_migrate(supa: SupabaseDb) -> None:
    with psycopg.connect(supa.owner_url, autocommit=True) as owner:
        owner.execute("CREATE TABLE public.retrieval_added_later (id serial PRIMARY KEY)")
        try:
            grants = "SELECT has_table_privilege('anon', 'public.retrieval_added_later', 'SELECT')"
            assert owner.execute(grants).fetchone() == (True,)  # Supabase's default privileges
            migrate(supa.owner_url)
            assert owner.execute(grants).fetchone() == (False,)
            seq = (
                "SELECT has_sequence_privilege("
                "'anon', 'public.retrieval_added_later_id_seq', 'USAGE')"
            )
            assert owner.execute(seq).fetchone() == (False,)
        finally:
            owner.execute("DROP TABLE public.retrieval_added_later")


def _as_user(conn: psycopg.Connection, user: uuid.UUID | None) -> None:
    conn.execute("SET LOCAL ROLE authenticated")
    if user is not None:
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (f'{{"sub": "{user}"}}',))


def test_agentopia_tables_made_by_the_service_get_owner_only_rls(supa: SupabaseDb) -> None:
    alice, bob = supa.alice.user_id, supa.bob.user_id
    with psycopg.connect(supa.admin_url) as admin:
        for table in ("public.agents", "public.datastores", "public.agent_datastores"):
            for who in ("anon", None):
                with admin.transaction(force_rollback=True):
                    if who == "anon":
                        admin.execute("SET LOCAL ROLE anon")
                    else:
                        _as_user(admin, None)  # authenticated without a user: nothing
                    count = admin.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table)))
                    assert count.fetchone() == (0,), f"{who or 'authenticated'} sees {table}"
        with admin.transaction(force_rollback=True):
            _as_user(admin, alice)
            mine = admin.execute("SELECT id FROM public.datastores").fetchall()
            assert mine == [(supa.alice_datastore,)]
            assert admin.execute("SELECT count(*) FROM public.agent_datastores").fetchone() == (1,)
            # Agentopia's UI updating its agent fires the service's trigger, whose
            # function the API roles may not execute: triggers still run.
            updated = admin.execute(
                "UPDATE public.agents SET name = 'renamed' WHERE id = %s", (supa.alice_agent,)
            )
            assert updated.rowcount == 1
        for statement, params in [
            ("INSERT INTO public.agents (user_id, name) VALUES (%s, 'x')", (bob,)),
            (
                "INSERT INTO public.agent_datastores (agent_id, datastore_id) VALUES (%s, %s)",
                (supa.alice_agent, supa.bob_datastore),
            ),
        ]:
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
                admin.transaction(force_rollback=True),
            ):
                _as_user(admin, alice)
                admin.execute(statement, params)
        for role in API_ROLES:
            assert _refused(admin, role, "SELECT * FROM auth.users")


def test_existing_agentopia_tables_are_left_untouched(pg_url: str) -> None:
    """Agentopia's own tables (RLS on, its policies) keep exactly their policies."""
    name = f"agentopia_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(pg_url, dbname=name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(AGENTOPIA_SCHEMA)
        migrate(url)
        with psycopg.connect(url) as conn:
            policies = conn.execute(
                "SELECT polrelid::regclass::text, polname FROM pg_policy ORDER BY 1, 2"
            ).fetchall()
            assert policies == [
                ("agent_datastores", "agentopia links"),
                ("agents", "agentopia agents"),
                ("datastores", "agentopia datastores"),
            ]
            source = conn.execute(
                "SELECT prosrc FROM pg_proc WHERE oid = 'auth.uid()'::regprocedure"
            )
            assert source.fetchone() == ("SELECT 'agentopia'::text::uuid",)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_start_up_refuses_a_role_that_rls_would_blind(supa: SupabaseDb) -> None:
    """A non-owner without BYPASSRLS would see no agent or datastore: refused, with the fix."""
    reader = f"retrieval_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(supa.admin_url, autocommit=True) as admin:
        role = sql.Identifier(reader)
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(role))
        admin.execute(
            sql.SQL("GRANT SELECT ON public.retrieval_schema_migrations TO {}").format(role)
        )
        try:
            with pytest.raises(FailedPrecondition, match="BYPASSRLS"):
                migrate(make_conninfo(supa.admin_url, user=reader))
        finally:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(role))
            admin.execute(sql.SQL("DROP ROLE {}").format(role))


def test_agentopia_ui_deleting_a_datastore_takes_its_chunks(supa: SupabaseDb) -> None:
    """Agentopia's UI deletes a datastore row as ``authenticated`` (its RLS: the owner's
    own): the cascade to datastore_documents fires the service's trigger, which deletes
    the chunks although the API roles may neither execute it nor touch the chunks."""
    partition = sql.Identifier(partition_name(supa.alice_datastore))
    count = sql.SQL("SELECT count(*) FROM public.{}").format(partition)
    with psycopg.connect(supa.admin_url) as admin, admin.transaction(force_rollback=True):
        _as_user(admin, supa.alice.user_id)
        deleted = admin.execute(
            "DELETE FROM public.datastores WHERE id = %s", (supa.alice_datastore,)
        )
        assert deleted.rowcount == 1
        admin.execute("RESET ROLE")
        assert admin.execute(count).fetchone() == (0,)
        bob = sql.SQL("SELECT count(*) FROM public.{}").format(
            sql.Identifier(partition_name(supa.bob_datastore))
        )
        assert admin.execute(bob).fetchone() == (1,)
