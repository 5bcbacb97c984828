"""Supabase access tokens against a real server: keys from a JWKS on 127.0.0.1, the legacy
HS256 secret, every refusal the issue lists, key rotation, and tenant isolation by token."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from service.app import App
from service.client import Client, connect, pb
from service.models import Role
from tests.helpers.jwt_support import (
    ISSUER,
    JwksServer,
    SigningKey,
    hs256_token,
    hs256_with_secret,
    jwt_settings,
    make_token,
    unsigned_token,
    with_claims,
)
from tests.helpers.own_server import own_server
from tests.helpers.rpc import ingest_vectors, query_vector, status_of, vector_datastore

MIN_REFETCH_S = 0.5
JWKS_TTL_S = 3.0


@pytest.fixture(scope="module")
def es256() -> SigningKey:
    return SigningKey.es256()


@pytest.fixture(scope="module")
def rs256() -> SigningKey:
    return SigningKey.rs256()


@pytest.fixture(scope="module")
def jwks(es256: SigningKey, rs256: SigningKey) -> Iterator[JwksServer]:
    with JwksServer(es256, rs256).running() as server:
        yield server


@pytest.fixture(scope="module")
def jwt_server(
    pg_url: str, jwks: JwksServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[App, str]]:
    """A server of its own (the shared one has no JWT settings), on the shared database."""
    with own_server(
        pg_url,
        tmp_path_factory.mktemp("jwt-data"),
        **jwt_settings(jwks),
        jwks_min_refetch_s=MIN_REFETCH_S,
        jwks_cache_ttl_s=JWKS_TTL_S,
    ) as served:
        yield served


@pytest.fixture(scope="module")
def jwt_app(jwt_server: tuple[App, str]) -> App:
    return jwt_server[0]


@pytest.fixture(scope="module")
def jwt_target(jwt_server: tuple[App, str]) -> str:
    return jwt_server[1]


@pytest.fixture
def as_caller(jwt_target: str) -> Iterator[Callable[[str], Client]]:
    """Factory: a client on the JWT server presenting ``credential``."""
    clients: list[Client] = []

    def make(credential: str) -> Client:
        client = connect(jwt_target, credential)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def user_id(jwt_app: App) -> uuid.UUID:
    return jwt_app.identity.create_user(f"{uuid.uuid4().hex}@jwt.test")


def list_names(client: Client) -> list[str]:
    return [d.name for d in client.datastores.ListDatastores(pb.ListDatastoresRequest()).datastores]


def refusal(client: Client) -> tuple[grpc.StatusCode, str]:
    return status_of(lambda: client.datastores.ListDatastores(pb.ListDatastoresRequest()))


def test_es256_rs256_and_legacy_hs256_user_tokens_are_accepted(
    as_caller: Callable[[str], Client], es256: SigningKey, rs256: SigningKey, user_id: uuid.UUID
) -> None:
    for token in (
        make_token(es256, user_id),
        make_token(rs256, user_id),
        hs256_token(user_id, iss=ISSUER),
        make_token(es256, user_id, aud=["other-app", "authenticated"]),  # aud is a list
    ):
        assert list_names(as_caller(token)) == []


def test_a_user_token_reads_exactly_that_users_datastores(
    jwt_app: App, as_caller: Callable[[str], Client], es256: SigningKey, user_id: uuid.UUID
) -> None:
    # Alice's datastore is made with her API key; Bob is another user with his own.
    alice_key = as_caller(jwt_app.identity.create_key(user_id, Role.USER).key)
    mine = vector_datastore(alice_key, dimensions=4)
    ingest_vectors(alice_key, mine.id, _vectors(3), prefix="alice")
    bob_id = jwt_app.identity.create_user(None)
    bob = as_caller(jwt_app.identity.create_key(bob_id, Role.USER).key)
    theirs = vector_datastore(bob, dimensions=4)
    ingest_vectors(bob, theirs.id, _vectors(3), prefix="bob")

    alice = as_caller(make_token(es256, user_id))
    listed = alice.datastores.ListDatastores(pb.ListDatastoresRequest()).datastores
    assert [d.id for d in listed] == [mine.id]
    hits = query_vector(alice, [mine.id], [1.0, 0.0, 0.0, 0.0]).hits
    assert sorted(h.external_id for h in hits) == ["alice0", "alice1", "alice2"]
    code, _ = status_of(lambda: query_vector(alice, [theirs.id], [1.0, 0.0, 0.0, 0.0]))
    assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
    code, _ = status_of(lambda: alice.datastores.GetDatastore(pb.GetDatastoreRequest(id=theirs.id)))
    assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
    # What Alice makes with her token is hers: her API key sees it too.
    made = vector_datastore(alice, dimensions=4)
    listed = alice_key.datastores.ListDatastores(pb.ListDatastoresRequest()).datastores
    assert sorted(d.id for d in listed) == sorted([mine.id, made.id])


def test_a_service_role_token_is_a_service_principal(
    jwt_app: App, as_caller: Callable[[str], Client], rs256: SigningKey, user_id: uuid.UUID
) -> None:
    owner = as_caller(jwt_app.identity.create_key(user_id, Role.USER).key)
    ds = vector_datastore(owner, dimensions=4)
    runtime_user = jwt_app.identity.create_user(None)
    service = as_caller(make_token(rs256, runtime_user, role="service_role"))
    assert service.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds.id)).id == ds.id
    # the same subject with role 'authenticated' is an ordinary user: not the owner
    user = as_caller(make_token(rs256, runtime_user))
    code, _ = status_of(lambda: user.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds.id)))
    assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)


def _vectors(n: int) -> np.ndarray:
    return np.array([[1.0, 0.1 * i, 0.0, 0.0] for i in range(n)], dtype=np.float32)


REFUSED: dict[str, tuple[Callable[[SigningKey, SigningKey, uuid.UUID], str], str]] = {
    "expired": (lambda k, r, u: make_token(k, u, expires_in=-120), "expired"),
    "no exp": (lambda k, r, u: make_token(k, u, expires_in=0, exp=None), "'exp' claim"),
    "wrong audience": (lambda k, r, u: make_token(k, u, aud="anon"), "audience"),
    "no audience": (lambda k, r, u: make_token(k, u, aud=None), "'aud' claim"),
    "wrong issuer": (
        lambda k, r, u: make_token(k, u, iss="https://evil.example/auth/v1"),
        "issuer",
    ),
    "no issuer": (lambda k, r, u: make_token(k, u, iss=None), "'iss' claim"),
    "bad signature": (lambda k, r, u: make_token(SigningKey.es256(k.kid), u), "signature"),
    "forged role": (
        lambda k, r, u: with_claims(make_token(k, u), role="service_role"),
        "signature",
    ),
    "alg none": (lambda k, r, u: unsigned_token(u), "algorithm"),
    "algorithm confusion": (
        lambda k, r, u: hs256_with_secret(r.public_pem(), u, kid=r.kid, iss=ISSUER),
        "signature",
    ),
    "RS256 token naming an EC key": (
        lambda k, r, u: make_token(r, u, kid=k.kid),
        "does not match",
    ),
    "HS256 with another secret": (
        lambda k, r, u: hs256_token(u, secret="another-secret-also-at-least-32-bytes-long"),
        "signature",
    ),
    "anon": (lambda k, r, u: make_token(k, u, role="anon"), "role"),
    "no role": (lambda k, r, u: make_token(k, u, role=None), "role"),
    "no sub": (lambda k, r, u: make_token(k, None), "'sub' claim"),
    "sub not a uuid": (lambda k, r, u: make_token(k, "alice"), "not a user id"),
    "unknown sub": (lambda k, r, u: make_token(k, uuid.uuid4()), "not a known user"),
    "unknown kid": (lambda k, r, u: make_token(SigningKey.es256(), u), "unknown key"),
    "not a JWT": (lambda k, r, u: "not-a-key-nor-a-token", "neither an API key"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_tokens_are_refused(
    case: str,
    as_caller: Callable[[str], Client],
    es256: SigningKey,
    rs256: SigningKey,
    user_id: uuid.UUID,
    caplog: pytest.LogCaptureFixture,
) -> None:
    build, reason = REFUSED[case]
    token = build(es256, rs256, user_id)
    with caplog.at_level(logging.DEBUG):
        code, details = refusal(as_caller(token))
    assert code == grpc.StatusCode.UNAUTHENTICATED, details
    assert reason in details
    assert all(token not in r.getMessage() for r in caplog.records)  # tokens never logged


def test_key_rotation_new_kid_is_fetched_and_a_removed_key_is_refused(
    as_caller: Callable[[str], Client], jwks: JwksServer, user_id: uuid.UUID
) -> None:
    rotated = SigningKey.es256()
    token = make_token(rotated, user_id)
    code, details = refusal(as_caller(token))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "unknown key" in details

    jwks.add(rotated)
    time.sleep(MIN_REFETCH_S + 0.1)  # an unknown kid rereads the JWKS at most this often
    fetched = jwks.requests
    assert list_names(as_caller(token)) == []
    assert jwks.requests == fetched + 1

    # Removed from the JWKS: refused once the cached document expires (or on a reread
    # prompted by another unknown kid, whichever comes first).
    jwks.remove(rotated)
    deadline = time.monotonic() + JWKS_TTL_S + 5.0
    while time.monotonic() < deadline:
        try:
            list_names(as_caller(token))
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "unknown key" in (e.details() or "")
            break
        time.sleep(0.2)
    else:
        pytest.fail("a key removed from the JWKS was still accepted after the cache TTL")


def test_without_jwt_settings_only_api_keys_work(
    app: App, target: str, es256: SigningKey, make_client: Callable[..., Client]
) -> None:
    """The shared server has no JWT settings: a valid-looking token is a clear refusal."""
    assert not app.settings.jwt_configured, "this test needs a server without JWT settings"
    user = make_client()  # an API key works as ever
    assert user.datastores.ListDatastores(pb.ListDatastoresRequest()) is not None
    client = connect(target, make_token(es256, uuid.uuid4()))
    try:
        code, details = refusal(client)
    finally:
        client.close()
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "accepts no Supabase access tokens" in details
