"""The settings of who may call and how: TLS on the ports, Supabase access tokens.

:class:`service.settings.Settings` inherits them: one Settings object, one environment
prefix, one generated table; this module only keeps them together.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuthSettings(BaseSettings):
    """TLS and JWT settings (part of ``Settings``)."""

    # Errors name the field, never its value: values include secrets (a JWT secret, a
    # password inside DATABASE_URL) and start-up errors end up in logs.
    model_config = SettingsConfigDict(
        env_prefix="RETRIEVAL_", extra="ignore", hide_input_in_errors=True
    )

    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate chain the server presents; with tls_key_file, the gRPC "
        "port speaks TLS only (docs/security.md).",
    )
    tls_key_file: Path | None = Field(
        default=None, description="PEM private key of tls_cert_file (keep it mode 0600)."
    )
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle: when set, every client must present a certificate "
        "signed by it (mutual TLS), in addition to its bearer credential.",
    )
    allow_plaintext: bool = Field(
        default=False,
        description="Allow plaintext gRPC on a non-loopback address (behind a TLS-terminating "
        "proxy or on a private network); without it such a bind is refused at start-up.",
    )
    jwks_url: str | None = Field(
        default=None,
        description="Supabase JWKS URL (https://<project>.supabase.co/auth/v1/.well-known/"
        "jwks.json): its ES256/RS256 keys verify Supabase access tokens. Unset = no JWKS.",
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="Supabase's legacy JWT secret (at least 32 characters): verifies HS256 "
        "access tokens. Unset = HS256 tokens are refused.",
    )
    jwt_issuer: str | None = Field(
        default=None,
        description="When set, a token's iss claim must equal it "
        "(Supabase: https://<project>.supabase.co/auth/v1).",
    )
    jwt_leeway_s: float = Field(
        default=10.0, ge=0, le=60, description="Clock skew allowed on a token's exp/nbf/iat."
    )
    jwks_cache_ttl_s: float = Field(
        default=600.0,
        ge=1,
        le=86_400,
        description="How long fetched JWKS keys are trusted before the URL is read again: a "
        "key removed from the JWKS is refused at most this long after.",
    )
    jwks_min_refetch_s: float = Field(
        default=30.0,
        ge=0.1,
        le=3600,
        description="Least time between two reads of the JWKS URL prompted by an unknown kid, "
        "so tokens naming made-up keys cannot make the service hammer the URL.",
    )

    @model_validator(mode="after")
    def _check_tls(self) -> AuthSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    @field_validator("jwks_url")
    @classmethod
    def _check_jwks_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        return url

    @property
    def jwt_configured(self) -> bool:
        """True when Supabase access tokens are accepted beside API keys."""
        return self.jwks_url is not None or self.jwt_secret is not None
