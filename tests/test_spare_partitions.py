"""CreateDatastore takes a partition made ahead of need (core/spare_partitions.py)."""

from __future__ import annotations

import re
import time
from uuid import UUID

import numpy as np
import psycopg
import pytest

from service.app import App
from service.client import Client, pb
from service.core.datastore_config import ConfigRequest
from service.core.datastores import DatastoreFields, Datastores
from service.models import Principal, Role
from service.storage import partitions
from tests.helpers.rpc import ingest_vectors, query_vector, vector_datastore

_OWN_NAME = re.compile(r"datastore_chunks_[0-9a-f]{8,32}")


def _spares(conn: psycopg.Connection) -> set[UUID]:
    rows = conn.execute("SELECT datastore_id FROM public.datastore_spare_partitions").fetchall()
    return {UUID(str(r[0])) for r in rows}


def _shape(conn: psycopg.Connection, datastore_id: UUID) -> dict[str, list[tuple[str, ...]]]:
    """A partition's definition with its own name taken out: columns, indexes,
    constraints, triggers, row level security, privileges and bound."""
    rel = f"public.{partitions.partition_name(datastore_id)}"

    def rows(query: str) -> list[tuple[str, ...]]:
        return sorted(
            # (an index name too long for 63 bytes keeps a part of the partition's)
            tuple(_OWN_NAME.sub("P", str(v).replace(str(datastore_id), "ID")) for v in r)
            for r in conn.execute(query, {"rel": rel}).fetchall()
        )

    return {
        "columns": rows(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull, attgenerated,"
            " attstorage, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a"
            " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = %(rel)s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        "indexes": rows(
            "SELECT pg_get_indexdef(indexrelid), (SELECT inhparent::regclass::text"
            " FROM pg_inherits WHERE inhrelid = indexrelid) FROM pg_index"
            " WHERE indrelid = %(rel)s::regclass"
        ),
        "constraints": rows(
            "SELECT contype, pg_get_constraintdef(oid), conparentid <> 0 FROM pg_constraint"
            " WHERE conrelid = %(rel)s::regclass AND contype <> 'n'"
        ),
        "triggers": rows(
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger"
            " WHERE tgrelid = %(rel)s::regclass AND NOT tgisinternal"
        ),
        "table": rows(
            "SELECT relrowsecurity, relacl, pg_get_expr(relpartbound, oid) <> '', relispartition"
            " FROM pg_class WHERE oid = %(rel)s::regclass"
        ),
    }


def _wait_for(condition: object, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_create_takes_a_spare_partition_and_the_filler_tops_them_up(
    client: Client, app: App, pg_url: str
) -> None:
    target = app.settings.spare_partitions
    assert target > 1  # the default: every test server keeps spares
    app.spares.fill(low=target - 1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        before = _spares(conn)
        assert len(before) == target
        # The filler waits until half are claimed, then attaches the rest in one batch.
        created = [vector_datastore(client, dimensions=4) for _ in range(target - target // 2)]
        claimed = {UUID(ds.id) for ds in created}
        assert claimed <= before  # their ids are spares': no partition was created for them
        assert _wait_for(lambda: len(_spares(conn)) == target)
        assert not claimed & _spares(conn)
    ds = created[0]
    # and it is a datastore like any other: ingest, query, delete
    ingest_vectors(client, ds.id, np.eye(4, dtype=np.float32))
    reply = query_vector(client, [ds.id], [1.0, 0.0, 0.0, 0.0])
    assert reply.hits[0].external_id == "v0"
    client.datastores.DeleteDatastore(pb.DeleteDatastoreRequest(id=ds.id))
    with psycopg.connect(pg_url) as conn:
        found = conn.execute(
            "SELECT to_regclass(%s)", (f"public.{partitions.partition_name(UUID(ds.id))}",)
        ).fetchone()
    assert found == (None,)


def test_a_claimed_spare_partition_is_built_like_one_created_with_its_datastore(
    app: App, pg_url: str
) -> None:
    """Same columns (generated tsvector, storage), keys attached to the parent's, foreign
    key, HNSW and keyword indexes, triggers, row level security and privileges."""
    user = app.identity.create_user("spare-shape@test")
    principal = Principal(user, Role.USER)
    fields = DatastoreFields(
        name="shape", config=ConfigRequest({"embedding_model": "none", "dimensions": 4})
    )
    app.spares.fill(low=app.settings.spare_partitions - 1)
    with_spare = app.datastores.create(principal, fields)
    without = Datastores(
        app.db, app.models, app.settings, app.lookups, app.reembedding, spares=None
    ).create(principal, fields)
    with psycopg.connect(pg_url) as conn:
        assert with_spare.id not in _spares(conn)
        assert without.id not in _spares(conn)
        spare_shape, own_shape = _shape(conn, with_spare.id), _shape(conn, without.id)
    assert spare_shape["indexes"]  # HNSW, GIN, primary key, document index
    assert len(spare_shape["triggers"]) == 5
    assert spare_shape == own_shape


def test_a_failed_create_returns_its_spare(app: App, pg_url: str) -> None:
    """The claim is the spare row's delete, in the creating transaction."""
    app.spares.fill(low=app.settings.spare_partitions - 1)
    with psycopg.connect(pg_url) as conn:
        before = _spares(conn)
        with pytest.raises(_Abort), conn.transaction():
            claimed = partitions.claim_spare(conn)
            assert claimed in before
            raise _Abort
    with psycopg.connect(pg_url) as conn:
        assert claimed in _spares(conn)


class _Abort(Exception):
    pass
