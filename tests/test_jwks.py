"""The JWKS key cache against a real HTTP server on 127.0.0.1, on a clock the test moves:
rereads on rotation, its rate limit, expiry of removed keys, timeouts and byte bounds."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Iterator

import jwt
import pytest
from pydantic import ValidationError

from service.core.jwks import JwksKeys, fetch_document, parse_jwks
from service.core.jwt_auth import TokenVerifier
from service.errors import Unauthenticated, Unavailable
from service.models import Role
from service.settings import Settings
from tests.helpers.jwt_support import (
    JwksServer,
    SigningKey,
    hs256_with_secret,
    make_token,
    unsigned_token,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ec_key() -> SigningKey:
    return SigningKey.es256()


@pytest.fixture
def jwks(ec_key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer(ec_key).running() as server:
        yield server


def cache(url: str, clock: Clock, **kwargs: float) -> JwksKeys:
    options = {"ttl_s": 600.0, "min_refetch_s": 30.0, **kwargs}
    return JwksKeys(url, clock=clock, **options)  # type: ignore[arg-type]


def test_unknown_kids_reread_the_jwks_at_most_once_per_interval(
    jwks: JwksServer, ec_key: SigningKey
) -> None:
    clock = Clock()
    keys = cache(jwks.url, clock)
    assert keys.key(ec_key.kid).algorithm == "ES256"
    assert jwks.requests == 1
    for _ in range(50):  # a flood of made-up kids
        with pytest.raises(Unauthenticated, match="unknown key"):
            keys.key(uuid.uuid4().hex)
    assert jwks.requests == 1  # the first read was under 30 s ago: no reread at all

    rotated = SigningKey.rs256()
    jwks.add(rotated)
    clock.now += 29
    with pytest.raises(Unauthenticated):
        keys.key(rotated.kid)
    clock.now += 1
    assert keys.key(rotated.kid).algorithm == "RS256"  # reread: the new key is in
    assert jwks.requests == 2
    for _ in range(50):
        with pytest.raises(Unauthenticated):
            keys.key(uuid.uuid4().hex)
    assert jwks.requests == 2


def test_a_removed_key_holds_until_the_cache_expires_or_an_unknown_kid_rereads(
    jwks: JwksServer, ec_key: SigningKey
) -> None:
    clock = Clock()
    keys = cache(jwks.url, clock, ttl_s=600.0, min_refetch_s=30.0)
    keys.key(ec_key.kid)
    jwks.remove(ec_key)
    clock.now += 599
    assert keys.key(ec_key.kid).kid == ec_key.kid  # still cached: the documented window
    clock.now += 1
    with pytest.raises(Unauthenticated, match="unknown key"):
        keys.key(ec_key.kid)  # the cache expired: reread, gone

    # A reread prompted by an unknown kid drops removed keys too, before the TTL.
    again = SigningKey.es256()
    jwks.add(again)
    keys = cache(jwks.url, clock)
    keys.key(again.kid)
    jwks.remove(again)
    clock.now += 30
    with pytest.raises(Unauthenticated):
        keys.key("some-new-kid")
    with pytest.raises(Unauthenticated, match="unknown key"):
        keys.key(again.kid)


def test_an_unreachable_jwks_keeps_the_keys_it_had_and_retries_sparingly(
    ec_key: SigningKey,
) -> None:
    clock = Clock()
    server = JwksServer(ec_key)
    with server.running():
        keys = cache(server.url, clock, ttl_s=60.0, min_refetch_s=10.0)
        keys.key(ec_key.kid)
    clock.now += 60  # stale, and the server is gone
    assert keys.key(ec_key.kid).kid == ec_key.kid
    assert keys.fetches == 2
    clock.now += 5
    keys.key(ec_key.kid)
    assert keys.fetches == 2  # a failed read is retried only after min_refetch_s
    clock.now += 5
    keys.key(ec_key.kid)
    assert keys.fetches == 3


def test_no_keys_yet_and_no_jwks_is_unavailable_not_unauthenticated() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    keys = cache(f"http://127.0.0.1:{port}/jwks.json", Clock())
    with pytest.raises(Unavailable):
        keys.key("any")


def test_a_silent_jwks_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the connection in the backlog, never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/jwks.json"
        keys = JwksKeys(url, ttl_s=60, min_refetch_s=1, timeout_s=0.3)
        with pytest.raises(Unavailable):
            keys.key("any")


def test_the_jwks_document_is_bounded_in_bytes(jwks: JwksServer) -> None:
    for _ in range(20):
        jwks.add(SigningKey.es256())
    with pytest.raises(ValueError, match="larger than 1024 bytes"):
        fetch_document(jwks.url, timeout=5.0, max_bytes=1024)
    assert len(parse_jwks(fetch_document(jwks.url, timeout=5.0, max_bytes=64 * 1024))) == 21


def test_only_signature_keys_of_known_types_are_used() -> None:
    ec, rsa = SigningKey.es256("ec"), SigningKey.rs256("rsa")
    document = {
        "keys": [
            ec.public_jwk(),
            {**rsa.public_jwk(), "alg": "PS256"},  # not on the list
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},  # symmetric: never from a JWKS
            {**SigningKey.es256("enc").public_jwk(), "use": "enc"},
            {"kty": "EC", "kid": "broken", "crv": "P-256", "x": "AA"},
            "not a key",
        ]
    }

    assert list(parse_jwks(json.dumps(document).encode())) == ["ec"]


def test_algorithm_confusion_is_refused_without_a_secret_too(jwks: JwksServer) -> None:
    rsa = SigningKey.rs256()
    jwks.add(rsa)
    verifier = TokenVerifier(jwks=cache(jwks.url, Clock()), secret=None, issuer=None, leeway_s=0)
    user = uuid.uuid4()
    assert verifier.verify(make_token(rsa, user)).role == Role.USER
    forged = hs256_with_secret(rsa.public_pem(), user, kid=rsa.kid)
    with pytest.raises(Unauthenticated, match="HS256 access tokens are not accepted"):
        verifier.verify(forged)
    with pytest.raises(Unauthenticated, match="algorithm not accepted"):
        verifier.verify(unsigned_token(user))


def _raw(header: object, body: object, signature: bytes = b"sig") -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(body)}.{part(signature.decode())}"


@pytest.mark.parametrize(
    "token",
    [
        _raw({"alg": ["ES256"], "kid": "k"}, {}),
        _raw({"alg": {"x": 1}}, {}),
        _raw({"alg": "ES256", "kid": ["k"]}, {}),
        _raw({"alg": "ES256", "kid": 7}, {}),
        _raw({"alg": "HS256"}, [1, 2]),
        _raw({"alg": "HS256"}, "text"),
        _raw(["not", "an", "object"], {}),
        _raw({"alg": "ES256", "kid": "k"}, {}) + ".extra",
        "a.b",
        "....",
        "x" * 20_000,
        "eyJ\x00.eyJ.x",
    ],
)
def test_odd_tokens_are_unauthenticated_never_an_internal_error(
    jwks: JwksServer, token: str
) -> None:
    verifier = TokenVerifier(
        jwks=cache(jwks.url, Clock()), secret="s" * 40, issuer=None, leeway_s=0
    )
    with pytest.raises(Unauthenticated):
        verifier.verify(token)


def test_odd_claims_are_unauthenticated(jwks: JwksServer) -> None:
    secret = "s" * 40
    verifier = TokenVerifier(jwks=None, secret=secret, issuer=None, leeway_s=0)
    good = {"aud": "authenticated", "exp": 2**31, "role": "authenticated"}
    for body in (
        {**good, "sub": 12},
        {**good, "sub": ["x"]},
        {**good, "sub": str(uuid.uuid4()), "role": ["authenticated"]},
        {**good, "sub": str(uuid.uuid4()), "role": {"a": 1}},
        {**good, "sub": str(uuid.uuid4()), "exp": "soon"},
        {**good, "sub": str(uuid.uuid4()), "aud": 5},
        {**good, "sub": str(uuid.uuid4()), "iat": "now"},
        {**good, "sub": str(uuid.uuid4()), "nbf": 2**31},
    ):
        with pytest.raises(Unauthenticated):
            verifier.verify(jwt.encode(body, secret, algorithm="HS256"))


def test_jwt_settings_are_checked_without_echoing_the_secret() -> None:
    weak = "a-weak-secret-0123"
    with pytest.raises(ValidationError) as info:
        Settings(jwt_secret=weak)  # type: ignore[arg-type]
    assert "jwt_secret" in str(info.value) and weak not in str(info.value)
    with pytest.raises(ValidationError, match="http"):
        Settings(jwks_url="file:///etc/passwd")
    strong = "a-strong-secret-" + "x" * 32
    settings = Settings(jwt_secret=strong)  # type: ignore[arg-type]
    assert settings.jwt_configured and strong not in repr(settings)
    assert not Settings().jwt_configured
    assert TokenVerifier.from_settings(Settings()) is None
