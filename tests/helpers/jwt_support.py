"""Supabase-style credentials for tests: signing keys, a JWKS server on 127.0.0.1, tokens.

``JwksServer`` serves the public half of its keys as a JWKS document (and counts the
requests); ``make_token`` signs Supabase-shaped access tokens; ``unsigned_token`` and
``hs256_with_secret`` build the hostile ones PyJWT refuses to make.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "authenticated"
ISSUER = "http://127.0.0.1/auth/v1"
# Supabase's legacy secrets are 40+ characters; PyJWT warns below 32 bytes.
HS256_SECRET = "test-legacy-jwt-secret-with-at-least-32-bytes"


@dataclass
class SigningKey:
    """A private key with its kid and algorithm (ES256: EC P-256; RS256: RSA 2048)."""

    kid: str
    algorithm: str
    private: Any = field(repr=False)

    @classmethod
    def es256(cls, kid: str | None = None) -> SigningKey:
        return cls(
            kid or f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1())
        )

    @classmethod
    def rs256(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or f"rsa-{uuid.uuid4().hex[:8]}", "RS256", key)

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_pem(self) -> bytes:
        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem


def claims(
    sub: str | uuid.UUID | None,
    *,
    role: str | None = "authenticated",
    aud: str | list[str] | None = AUDIENCE,
    iss: str | None = ISSUER,
    expires_in: float = 300.0,
    **extra: Any,
) -> dict[str, Any]:
    """Supabase-shaped access-token claims; ``None`` leaves a claim out (``exp=None`` too)."""
    now = int(time.time())
    given = {"sub": sub, "role": role, "aud": aud, "iss": iss}
    body: dict[str, Any] = {"iat": now, "exp": now + int(expires_in), **given, **extra}
    return {
        name: str(value) if isinstance(value, uuid.UUID) else value
        for name, value in body.items()
        if value is not None
    }


def make_token(key: SigningKey, sub: str | uuid.UUID | None, **kwargs: Any) -> str:
    """An access token for ``sub`` signed by ``key`` (see ``claims`` for the options)."""
    kid = kwargs.pop("kid", key.kid)
    return jwt.encode(
        claims(sub, **kwargs), key.private, algorithm=key.algorithm, headers={"kid": kid}
    )


def hs256_token(sub: str | uuid.UUID | None, secret: str = HS256_SECRET, **kwargs: Any) -> str:
    """A legacy HS256 access token (Supabase's shared JWT secret)."""
    return jwt.encode(claims(sub, **kwargs), secret, algorithm="HS256")


def with_claims(token: str, **changes: Any) -> str:
    """``token`` with its claims changed and its original signature kept (a forgery)."""
    header, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return ".".join([header, _b64(json.dumps({**claims, **changes}).encode()), signature])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], body: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(body).encode())


def unsigned_token(sub: str | uuid.UUID | None, **kwargs: Any) -> str:
    """``alg: none``: no signature at all."""
    return _unsigned({"alg": "none", "typ": "JWT"}, claims(sub, **kwargs)) + "."


def hs256_with_secret(
    secret: bytes, sub: str | uuid.UUID | None, kid: str | None = None, **kwargs: Any
) -> str:
    """HS256 signed with any bytes, e.g. a public key's PEM (the algorithm-confusion attack)."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = _unsigned(header, claims(sub, **kwargs))
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def jwt_settings(jwks: JwksServer) -> dict[str, Any]:
    """Settings fields that make an App accept tokens from ``jwks`` and ``HS256_SECRET``:
    ``Settings(..., **jwt_settings(jwks))``."""
    return {"jwks_url": jwks.url, "jwt_secret": HS256_SECRET, "jwt_issuer": ISSUER}


class JwksServer:
    """A JWKS document on ``http://127.0.0.1:<port>/jwks.json``; keys can come and go."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys: list[SigningKey] = list(keys)
        self.requests = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer._lock:
                    outer.requests += 1
                    body = json.dumps({"keys": [k.public_jwk() for k in outer.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def add(self, key: SigningKey) -> None:
        with self._lock:
            self.keys.append(key)

    def remove(self, key: SigningKey) -> None:
        with self._lock:
            self.keys = [k for k in self.keys if k.kid != key.kid]

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
