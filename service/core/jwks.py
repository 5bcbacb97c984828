"""Signing keys from a JWKS URL (Supabase's asymmetric keys), cached and refetched sparingly.

The document is read at most once per ``ttl_s`` for ordinary use, and again when a
token names a ``kid`` the cached document lacks (a key rotated in), but never more
often than once per ``min_refetch_s``: tokens naming made-up keys cannot make the
service hammer the URL. Reads have a timeout and a byte bound. When a read fails,
the keys already held stay in use (retried after ``min_refetch_s``), so a JWKS
outage does not log everyone out; a key removed from the document is refused from
the first successful read after its removal.

Each key is tied to one algorithm by its type: EC P-256 -> ES256, RSA -> RS256.
Symmetric (``oct``) keys and anything else in the document are ignored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

import jwt

from service.errors import Unauthenticated, Unavailable

_log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 5.0
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_KEYS = 100


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str  # the only algorithm this key may verify
    key: Any  # a cryptography public key


def _algorithm_for(jwk: dict[str, Any]) -> str | None:
    """The one algorithm a JWK may verify, from its type; None for keys we never use."""
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        algorithm = "ES256"
    elif jwk.get("kty") == "RSA":
        algorithm = "RS256"
    else:
        return None
    if jwk.get("alg", algorithm) != algorithm or jwk.get("use", "sig") != "sig":
        return None
    return algorithm


def parse_jwks(document: bytes) -> dict[str, SigningKey]:
    """The usable signing keys of a JWKS document, by kid."""
    try:
        body = json.loads(document)
    except ValueError as e:
        raise ValueError("the JWKS document is not JSON") from e
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise ValueError("the JWKS document has no 'keys' list")
    keys: dict[str, SigningKey] = {}
    for jwk in body["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
            continue
        algorithm = _algorithm_for(jwk)
        if algorithm is None:
            continue
        try:
            parsed = jwt.PyJWK(jwk, algorithm=algorithm)
        except (jwt.PyJWTError, ValueError, KeyError, TypeError) as e:
            _log.warning("JWKS key %r skipped: %s", jwk["kid"], e)
            continue
        keys[jwk["kid"]] = SigningKey(jwk["kid"], algorithm, parsed.key)
    return keys


def fetch_document(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """GET ``url``: at most ``max_bytes``, within ``timeout`` per socket operation."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise ValueError(f"the JWKS document is larger than {max_bytes} bytes")
    return body


class JwksKeys:
    """The keys of one JWKS URL, fetched lazily; thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float,
        min_refetch_s: float,
        timeout_s: float = FETCH_TIMEOUT_S,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._ttl_s = ttl_s
        self._min_refetch_s = min_refetch_s
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._clock = clock
        # Held only while a read of the URL is decided and made (bounded by its timeout).
        # A token whose key is cached and fresh never waits for it: the cached document
        # is one tuple, replaced whole.
        self._fetch_lock = threading.Lock()
        self._cached: tuple[dict[str, SigningKey] | None, float] = (None, 0.0)  # keys, read at
        self._tried_at: float | None = None  # last attempt, successful or not
        self._last_failed = False
        self.fetches = 0  # attempts, for tests and metrics

    def key(self, kid: str) -> SigningKey:
        """The key named ``kid``. Raises Unauthenticated (no such key) or Unavailable."""
        keys, fetched_at = self._cached
        if keys is not None and kid in keys and self._clock() - fetched_at < self._ttl_s:
            return keys[kid]
        with self._fetch_lock:
            now = self._clock()
            keys, fetched_at = self._cached  # another caller may have just read it
            stale = keys is None or now - fetched_at >= self._ttl_s
            if stale or kid not in (keys or {}):
                self._refresh(now, stale=stale)
            keys = self._cached[0]
        if keys is None:
            raise Unavailable("cannot read the JWKS to verify the access token; retry shortly")
        found = keys.get(kid)
        if found is None:
            raise Unauthenticated("access token signed by an unknown key (kid)")
        return found

    def _refresh(self, now: float, *, stale: bool) -> None:
        # A stale document is reread at once unless the last read failed; anything else
        # (an unknown kid, a retry after a failure) waits out min_refetch_s.
        last = self._tried_at
        waits = last is not None and not (stale and not self._last_failed)
        if waits and last is not None and now - last < self._min_refetch_s:
            return
        self._tried_at = now
        self.fetches += 1
        try:
            document = fetch_document(self._url, timeout=self._timeout_s, max_bytes=self._max_bytes)
            keys = parse_jwks(document)
        except (OSError, HTTPException, ValueError) as e:
            self._last_failed = True
            _log.warning("reading the JWKS at %s failed: %s", self._url, e)
            return
        self._last_failed = False
        self._cached = (keys, now)
