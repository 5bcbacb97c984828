"""Input checks shared by the use cases; each failure names the offending field."""

from __future__ import annotations

import json
import math
from uuid import UUID

import numpy as np
import numpy.typing as npt

from service.errors import InvalidArgument
from service.models import JsonObject, Metric, Vector

# Lengths of the free-text fields of datastores and agents, in characters.
MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 10_000
MAX_INSTRUCTIONS_CHARS = 100_000
# A document's external_id, in UTF-8 bytes: the (datastore_id, external_id) index
# refuses rows above ~2.7 KB, which 1,024 characters of CJK text would pass.
MAX_EXTERNAL_ID_BYTES = 1024


def parse_uuid(value: str, field: str) -> UUID:
    if not value:
        raise InvalidArgument(f"{field} is required")
    try:
        return UUID(value)
    except ValueError as e:
        raise InvalidArgument(f"{field} {value!r} is not a valid UUID") from e


def check_threshold(value: float, field: str = "similarity_threshold") -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"{field} must be between 0 and 1 inclusive, got {value}")
    return value


def check_max_results(value: int, cap: int, field: str = "max_results") -> int:
    if value <= 0:
        raise InvalidArgument(f"{field} must be > 0, got {value}")
    if value > cap:
        raise InvalidArgument(f"{field} must be at most {cap} (the server cap), got {value}")
    return value


def check_text(
    value: str, field: str, *, max_chars: int | None = None, max_bytes: int | None = None
) -> str:
    """``value`` if PostgreSQL can store it (no NUL) within the limits given."""
    if "\x00" in value:
        raise InvalidArgument(f"{field} contains a NUL byte")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidArgument(f"{field} is longer than {max_chars} characters")
    if max_bytes is not None and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidArgument(f"{field} is longer than {max_bytes} bytes in UTF-8")
    return value


def not_json_number(field: str) -> InvalidArgument:
    """The error for a NaN or an infinity where JSON is expected."""
    return InvalidArgument(f"{field} holds NaN or an infinite number; JSON has neither")


def check_metadata(value: JsonObject, field: str) -> JsonObject:
    """``value`` if PostgreSQL's jsonb accepts it: no NUL, no NaN or infinity."""
    try:
        encoded = json.dumps(value, allow_nan=False)
    except ValueError as e:
        raise not_json_number(field) from e
    if "\\u0000" in encoded:
        raise InvalidArgument(f"{field} contains a NUL character")
    return value


def check_vector(values: npt.ArrayLike, dimensions: int, metric: Metric, field: str) -> Vector:
    """A float32 vector of the datastore's dimensions: finite, and non-zero for cosine."""
    vector = np.asarray(values, dtype=np.float32)
    if vector.ndim != 1 or vector.shape[0] != dimensions:
        raise InvalidArgument(
            f"{field} has {vector.shape[0] if vector.ndim == 1 else '?'} dimensions; "
            f"the datastore expects {dimensions}"
        )
    if not np.all(np.isfinite(vector)):
        raise InvalidArgument(f"{field} contains NaN or infinite values")
    if metric is Metric.COSINE and not np.any(vector):
        raise InvalidArgument(f"{field} is all zeros: cosine similarity is undefined for it")
    return vector
