"""Supabase access tokens (JWTs), verified locally with PyJWT.

Which key verifies a token follows from its header, against a fixed list:
ES256 and RS256 tokens need a key from the JWKS (looked up by ``kid``, and the
key's own type must match the algorithm); HS256 tokens need the legacy secret.
Anything else (``none``, HS384, PS256, ...) is refused, and no public key is ever
used as an HMAC secret (algorithm confusion). Claims: ``exp`` required, ``aud``
includes ``authenticated``, ``iss`` equal to the configured issuer when one is,
``sub`` present, and ``role`` either ``authenticated`` (a user) or ``service_role``
(a service). Whether ``sub`` names an ``auth.users`` row is the caller's check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import jwt

from service.core.jwks import JwksKeys
from service.errors import Unauthenticated
from service.models import Role
from service.settings import Settings

AUDIENCE = "authenticated"
MAX_TOKEN_CHARS = 16 * 1024
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
SYMMETRIC_ALGORITHM = "HS256"
_ROLES = {"authenticated": Role.USER, "service_role": Role.SERVICE}


@dataclass(frozen=True)
class TokenSubject:
    """Who a verified token speaks for."""

    user_id: UUID
    role: Role


class TokenVerifier:
    """Verifies Supabase access tokens with the JWKS keys and/or the legacy HS256 secret."""

    def __init__(
        self,
        *,
        jwks: JwksKeys | None,
        secret: str | None,
        issuer: str | None,
        leeway_s: float,
    ) -> None:
        if jwks is None and not secret:
            raise ValueError("a TokenVerifier needs a JWKS, a secret, or both")
        self._jwks = jwks
        self._secret = secret.encode() if secret else None
        self._issuer = issuer
        self._leeway_s = leeway_s

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        """The verifier the settings ask for; None when no JWT setting is given."""
        if not settings.jwt_configured:
            return None
        jwks = None
        if settings.jwks_url is not None:
            jwks = JwksKeys(
                settings.jwks_url,
                ttl_s=settings.jwks_cache_ttl_s,
                min_refetch_s=settings.jwks_min_refetch_s,
            )
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        return cls(
            jwks=jwks, secret=secret, issuer=settings.jwt_issuer, leeway_s=settings.jwt_leeway_s
        )

    def verify(self, token: str) -> TokenSubject:
        """The subject of a valid token. Raises Unauthenticated (or Unavailable: no JWKS)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("credential too long for an access token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise Unauthenticated(
                "unknown credential: neither an API key ('agr_...') nor a JWT access token"
            ) from e
        key, algorithm = self._key_for(header)
        claims = self._decode(token, key, algorithm)
        return _subject(claims)

    def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise Unauthenticated("access token header names no algorithm")
        if algorithm == SYMMETRIC_ALGORITHM:
            if self._secret is None:
                raise Unauthenticated("HS256 access tokens are not accepted here (no JWT secret)")
            return self._secret, SYMMETRIC_ALGORITHM
        if algorithm in ASYMMETRIC_ALGORITHMS:
            if self._jwks is None:
                raise Unauthenticated(f"{algorithm} access tokens are not accepted here (no JWKS)")
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise Unauthenticated("access token header names no signing key (kid)")
            signing_key = self._jwks.key(kid)
            if signing_key.algorithm != algorithm:
                raise Unauthenticated("access token algorithm does not match its signing key")
            return signing_key.key, algorithm
        raise Unauthenticated("access token algorithm not accepted (ES256, RS256 or HS256 only)")

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        required = ["exp", "aud", "sub"] + (["iss"] if self._issuer is not None else [])
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError as e:
            raise Unauthenticated("access token expired") from e
        except jwt.InvalidAudienceError as e:
            raise Unauthenticated(f"access token audience must include {AUDIENCE!r}") from e
        except jwt.InvalidIssuerError as e:
            raise Unauthenticated("access token issuer is not the configured one") from e
        except jwt.InvalidSignatureError as e:
            raise Unauthenticated("access token signature does not verify") from e
        except jwt.MissingRequiredClaimError as e:
            raise Unauthenticated(f"access token lacks the {e.claim!r} claim") from e
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"invalid access token: {e}") from e
        return claims


def _subject(claims: dict[str, Any]) -> TokenSubject:
    claimed = claims.get("role")
    role = _ROLES.get(claimed) if isinstance(claimed, str) else None
    if role is None:
        raise Unauthenticated("access token role must be 'authenticated' or 'service_role'")
    try:
        user_id = UUID(str(claims["sub"]))
    except ValueError as e:
        raise Unauthenticated("access token subject (sub) is not a user id") from e
    return TokenSubject(user_id, role)
