"""Building and validating a datastore's config from a request and the server defaults.

The fields, their defaults, limits and update-mask paths come from their one
definition in ``service.models.DatastoreConfig`` (see service/config_fields.py); this
module adds the rules that are more than a range: the model and its dimensions, the
chunking window, ``ef_construction >= 2 * m`` and the text search configuration name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service import config_fields, scoring
from service.config_fields import Leaf
from service.embedding.registry import ModelRegistry
from service.errors import InvalidArgument
from service.models import NO_MODEL, DatastoreConfig
from service.settings import Settings
from service.storage.partitions import BuildResources

FIELDS = config_fields.leaves(DatastoreConfig)
_BY_PATH = {f.path: f for f in FIELDS}
# Every update-mask path below "config": each field's, and each group's (all its fields).
MASK_PATHS = frozenset(
    [f.mask for f in FIELDS] + [f"config.{g}" for g in config_fields.groups(DatastoreConfig)]
)


@dataclass(frozen=True)
class ConfigRequest:
    """What a caller asked for, by field path (``{"chunk_size": 300, "hnsw.m": 8}``).

    A path left out, None, or (for a field that is not ``optional``) a zero value
    means "the default".
    """

    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.values) - set(_BY_PATH))
        if unknown:
            raise ValueError(f"not datastore config fields: {unknown}")

    def get(self, path: str) -> Any:
        """The requested value, or None for "the default"."""
        value = self.values.get(path)
        return None if _BY_PATH[path].is_unset(value) else value

    def updated(self, other: ConfigRequest, paths: Iterable[str]) -> ConfigRequest:
        """This request with ``other``'s values (set or not) for the fields at ``paths``."""
        return ConfigRequest({**self.values, **{p: other.values.get(p) for p in paths}})

    @classmethod
    def of(cls, config: DatastoreConfig) -> ConfigRequest:
        """A request for exactly ``config``."""
        return cls({f.path: config_fields.get(config, f.path) for f in FIELDS})


def masked_fields(paths: Iterable[str]) -> set[str]:
    """The field paths an update mask selects (``config.hnsw`` selects all three)."""
    return {f.path for p in paths for f in FIELDS if f.mask == p or f.mask.startswith(f"{p}.")}


def build_config(
    request: ConfigRequest, settings: Settings, models: ModelRegistry
) -> DatastoreConfig:
    """A complete, validated config; raises InvalidArgument naming the bad field."""
    values = _model_and_chunks(request, settings, models)
    for f in FIELDS:
        if f.path in values:
            continue
        value = request.get(f.path)
        if value is None:
            value = getattr(settings, f.spec.setting) if f.spec.setting else f.default
        _CHECKS.get(f.path, _check_range)(f, value, values)
        values[f.path] = value
    return config_fields.build(DatastoreConfig, values)


def _model_and_chunks(
    request: ConfigRequest, settings: Settings, models: ModelRegistry
) -> dict[str, Any]:
    """embedding_model, dimensions, chunk_size and chunk_overlap: defaults and limits
    that depend on the model."""
    model: str = request.get("embedding_model") or settings.default_embedding_model
    requested_dims: int = request.get("dimensions") or 0
    if model == NO_MODEL:
        if requested_dims <= 0:
            raise InvalidArgument("config.dimensions is required when embedding_model is 'none'")
        dimensions = requested_dims
        max_tokens = settings.default_chunk_size
    else:
        models.check_name(model)  # an unknown name is the caller's mistake: INVALID_ARGUMENT
        embedder = models.get(model)
        if requested_dims not in (0, embedder.dimensions):
            raise InvalidArgument(
                f"config.dimensions {requested_dims} does not match model {model!r}, "
                f"which produces {embedder.dimensions}"
            )
        dimensions = embedder.dimensions
        max_tokens = embedder.max_tokens
    if not 1 <= dimensions <= scoring.MAX_DIMENSIONS:
        raise InvalidArgument(f"config.dimensions must be 1..{scoring.MAX_DIMENSIONS}")

    chunk_size = request.get("chunk_size") or min(settings.default_chunk_size, max_tokens)
    if not 8 <= chunk_size <= max_tokens:
        raise InvalidArgument(
            f"config.chunk_size must be 8..{max_tokens} tokens (the model's window), "
            f"got {chunk_size}"
        )
    overlap = request.get("chunk_overlap")
    if overlap is None:
        overlap = min(settings.default_chunk_overlap, chunk_size // 4)
    if not 0 <= overlap < chunk_size:
        raise InvalidArgument(
            f"config.chunk_overlap must be >= 0 and < chunk_size ({chunk_size}), got {overlap}"
        )
    return {
        "embedding_model": model,
        "dimensions": dimensions,
        "chunk_size": chunk_size,
        "chunk_overlap": overlap,
    }


def _check_range(f: Leaf, value: Any, _: Mapping[str, Any]) -> None:
    """The field's own limits (none: anything of its type)."""
    low, high = f.spec.minimum, f.spec.maximum
    if low is None or high is None:
        return
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise InvalidArgument(f"{f.mask} must be {low}..{high}, got {value}")


def _check_ef_construction(f: Leaf, value: Any, values: Mapping[str, Any]) -> None:
    low, high = 2 * values["hnsw.m"], f.spec.maximum
    assert high is not None
    if not low <= value <= high:
        raise InvalidArgument(f"{f.mask} must be 2*m ({low})..{high}, got {value}")


def _check_text_search_config(f: Leaf, value: Any, _: Mapping[str, Any]) -> None:
    # Checked against the database's pg_ts_config by the caller.
    if len(value) > 128 or "\x00" in value:
        raise InvalidArgument(f"{f.mask} is not a text search configuration name")


_CHECKS: dict[str, Callable[[Leaf, Any, Mapping[str, Any]], None]] = {
    "hnsw.ef_construction": _check_ef_construction,
    "text_search_config": _check_text_search_config,
}


def index_build_resources(settings: Settings) -> BuildResources:
    """Memory, parallel workers and time of an HNSW build over existing rows."""
    return BuildResources(
        memory_mb=settings.index_build_memory_mb,
        parallel_workers=settings.index_build_parallel_workers,
        timeout_s=settings.index_build_timeout_s,
    )
