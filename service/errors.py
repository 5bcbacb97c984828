"""Domain errors: one tree, named for the condition; the API layer maps them to gRPC codes."""

from __future__ import annotations


class RetrievalError(Exception):
    """Base of every error the service raises on purpose."""


class InvalidArgument(RetrievalError):
    """The request itself is malformed or out of range."""


class NotFound(RetrievalError):
    """The named resource does not exist (or is invisible to the caller)."""


class AlreadyExists(RetrievalError):
    """The resource would duplicate an existing one."""


class Unauthenticated(RetrievalError):
    """No credential, or an unknown / revoked one."""


class PermissionDenied(RetrievalError):
    """The caller is authenticated but may not do this."""


class FailedPrecondition(RetrievalError):
    """The system is not in a state that allows this operation."""


class ResourceExhausted(RetrievalError):
    """A size or rate limit was hit."""


class Unavailable(RetrievalError):
    """A dependency (database, model) cannot serve right now; retrying may help."""


class ModelSwitched(Unavailable):
    """The datastore's embedding model changed (a re-embedding switched over) while
    the request was in progress; retrying reads the new settings."""
