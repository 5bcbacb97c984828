"""Datastore-config fields from their one definition: stored JSON, protobuf, update
masks, defaults and limits (no database, no model)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor
from pydantic import ValidationError

from service import config_fields
from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service.api import converters
from service.core.datastore_config import (
    FIELDS,
    MASK_PATHS,
    ConfigRequest,
    build_config,
    masked_fields,
)
from service.core.reembed_rules import reembed_decision
from service.embedding.registry import ModelRegistry
from service.errors import FailedPrecondition, InvalidArgument
from service.models import (
    Datastore,
    DatastoreConfig,
    HnswParams,
    Metric,
    ReembedStatus,
    SearchMode,
    VectorPrecision,
)
from service.settings import Settings

SETTINGS = Settings()
MODELS = ModelRegistry()  # loads nothing until a model is used; these tests use "none"

CONFIG = DatastoreConfig(
    embedding_model="none",
    dimensions=12,
    chunk_size=150,
    chunk_overlap=0,
    search_mode=SearchMode.HYBRID,
    hnsw=HnswParams(m=8, ef_construction=40, ef_search=55),
    low_confidence_fallback=False,
    text_search_config="simple",
    rrf_k=30,
    bm25_k1=0.9,
    bm25_b=0.0,
)


def _build(**values: Any) -> DatastoreConfig:
    return build_config(
        ConfigRequest({"embedding_model": "none", "dimensions": 4, **values}), SETTINGS, MODELS
    )


def _kept(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Every key of ``old`` is in ``new`` with the same value (or, for an object, kept)."""
    return all(
        k in new and (_kept(v, new[k]) if isinstance(v, dict) else new[k] == v)
        for k, v in old.items()
    )


def test_the_stored_json_keeps_its_layout() -> None:
    """Rows already in databases hold this layout; it must not change."""
    stored = {
        "embedding_model": "none",
        "dimensions": 12,
        "chunk_size": 150,
        "chunk_overlap": 0,
        "search_mode": "hybrid",
        "hnsw": {"m": 8, "ef_construction": 40, "ef_search": 55},
        "low_confidence_fallback": False,
        "text_search_config": "simple",
        "rrf_k": 30,
        "bm25": {"k1": 0.9, "b": 0.0},
    }
    assert _kept(stored, CONFIG.to_json())  # fields added later add keys, nothing else
    assert DatastoreConfig.from_json(stored) == CONFIG


def test_a_row_written_before_a_field_existed_loads_with_its_default() -> None:
    old = {"embedding_model": "none", "dimensions": 4, "chunk_size": 100, "chunk_overlap": 20}
    loaded = DatastoreConfig.from_json({**old, "hnsw": {"m": 12}})
    assert loaded == DatastoreConfig(
        embedding_model="none",
        dimensions=4,
        chunk_size=100,
        chunk_overlap=20,
        hnsw=HnswParams(m=12, ef_construction=64, ef_search=100),
    )
    assert (loaded.search_mode, loaded.rrf_k, loaded.bm25_k1, loaded.bm25_b) == (
        SearchMode.VECTOR,
        60,
        1.2,
        0.75,
    )
    assert DatastoreConfig.from_json({"hnsw": None, "bm25": None}) == DatastoreConfig()


def _proto_fields(message: Descriptor, prefix: str = "") -> dict[str, bool]:
    """Every scalar field of a message, by path, with whether it has explicit presence."""
    out: dict[str, bool] = {}
    for f in message.fields:
        if f.message_type is not None:
            out.update(_proto_fields(f.message_type, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = f.has_presence
    return out


def test_every_field_is_defined_once_for_the_proto_and_back() -> None:
    """The proto and the definitions name the same fields, with the same presence."""
    proto = _proto_fields(pb.DatastoreConfig.DESCRIPTOR)
    assert {f.path: f.spec.optional for f in FIELDS} == proto


def test_a_config_round_trips_through_protobuf() -> None:
    message = converters.datastore_config(CONFIG)
    assert message.hnsw.ef_search == 55 and message.HasField("chunk_overlap")
    assert converters.config_request(message) == ConfigRequest.of(CONFIG)
    assert build_config(ConfigRequest.of(CONFIG), SETTINGS, MODELS) == CONFIG


def test_unset_protobuf_fields_take_the_defaults() -> None:
    request = converters.config_request(pb.DatastoreConfig(embedding_model="none", dimensions=4))
    config = build_config(request, SETTINGS, MODELS)
    assert config.hnsw == HnswParams(SETTINGS.hnsw_m, SETTINGS.hnsw_ef_construction, 100)
    assert config.chunk_overlap == min(SETTINGS.default_chunk_overlap, config.chunk_size // 4)
    assert (config.low_confidence_fallback, config.rrf_k, config.bm25_b) == (True, 60, 0.75)
    assert config.text_search_config == SETTINGS.default_text_search_config
    # optional fields: zero is a choice, not "the default"
    zero = pb.DatastoreConfig(chunk_overlap=0, low_confidence_fallback=False, bm25_b=0.0)
    zero_paths = ["chunk_overlap", "low_confidence_fallback", "bm25_b"]
    request = ConfigRequest.of(config).updated(converters.config_request(zero), zero_paths)
    chosen = build_config(request, SETTINGS, MODELS)
    assert (chosen.chunk_overlap, chosen.low_confidence_fallback, chosen.bm25_b) == (0, False, 0)


def test_update_mask_paths_come_from_the_definitions() -> None:
    assert {f.mask for f in FIELDS} <= MASK_PATHS
    assert "config.hnsw" in MASK_PATHS and "config.bm25" not in MASK_PATHS
    assert masked_fields(["config.hnsw"]) == {f.path for f in FIELDS if f.path.startswith("hnsw.")}
    assert masked_fields(["config.bm25_k1", "name"]) == {"bm25_k1"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"hnsw.m": 101}, "config.hnsw.m must be 2..100, got 101"),
        (
            {"hnsw.m": 8, "hnsw.ef_construction": 15},
            "config.hnsw.ef_construction must be 2*m (16)..1000, got 15",
        ),
        (
            {"hnsw.ef_construction": 1001},
            "config.hnsw.ef_construction must be 2*m (32)..1000, got 1001",
        ),
        ({"hnsw.ef_search": -3}, "config.hnsw.ef_search must be 1..1000, got -3"),
        ({"rrf_k": 10_001}, "config.rrf_k must be 1..10000, got 10001"),
        ({"bm25_k1": math.nan}, "config.bm25_k1 must be 0..10, got nan"),
        ({"bm25_b": 1.5}, "config.bm25_b must be 0..1, got 1.5"),
        (
            {"text_search_config": "x" * 129},
            "config.text_search_config is not a text search configuration name",
        ),
        ({"chunk_size": 4}, "config.chunk_size must be 8..200 tokens (the model's window), got 4"),
        ({"chunk_overlap": -1}, "config.chunk_overlap must be >= 0 and < chunk_size (200), got -1"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_field(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _build(**values)
    assert str(raised.value) == message


def test_limits_and_defaults_are_shared_with_the_settings() -> None:
    m = config_fields.leaf(DatastoreConfig, "hnsw.m")
    assert SETTINGS.hnsw_m == m.default
    top = int(m.spec.maximum or 0)
    assert Settings(hnsw_m=top, hnsw_ef_construction=2 * top).hnsw_m == top
    with pytest.raises(ValidationError):
        Settings(hnsw_m=top + 1, hnsw_ef_construction=2 * top + 2)
    with pytest.raises(ValidationError):
        Settings(hnsw_ef_search=0)


def test_a_request_names_only_defined_fields() -> None:
    with pytest.raises(ValueError, match="hnsw_m"):
        ConfigRequest({"hnsw_m": 8})


def _reembedding(config: DatastoreConfig) -> tuple[Datastore, ReembedStatus]:
    now = datetime.now(UTC)
    current = Datastore(
        uuid.uuid4(), uuid.uuid4(), "d", "", "pgvector", config, Metric.COSINE, 0.5, 5, now, now
    )
    job = ReembedStatus("copying", 0, 10, "other-model", 8, config.embedding_model, 4)
    return current, job


def test_fields_declared_fixed_cannot_change_while_a_job_runs() -> None:
    source = _build(chunk_size=100)
    current, job = _reembedding(source)
    fixed = [f for f in FIELDS if f.spec.fixed_while_reembedding]
    assert {f.path for f in fixed} >= {"chunk_size", "hnsw.m", "vector_precision"}
    for f in FIELDS:
        old = config_fields.get(source, f.path)
        new: Any = not old if f.kind is bool else next(v for v in _OTHER[f.kind] if v != old)
        changed = config_fields.build(
            DatastoreConfig, {**ConfigRequest.of(source).values, f.path: new}
        )
        if f.path in ("embedding_model", "dimensions"):
            continue  # the model is the job's own business
        if f.spec.fixed_while_reembedding:
            with pytest.raises(FailedPrecondition, match=f"{f.mask} cannot change"):
                reembed_decision(current, changed, Metric.COSINE, [f.mask], job)
        else:
            assert not reembed_decision(current, changed, Metric.COSINE, [f.mask], job).cancel
    with pytest.raises(FailedPrecondition, match="similarity_metric cannot change"):
        reembed_decision(current, source, Metric.DOT, ["similarity_metric"], job)


_OTHER: dict[type[Any], tuple[Any, ...]] = {
    int: (7, 9),
    float: (0.5, 0.25),
    str: ("simple", "german"),
    SearchMode: tuple(SearchMode),
    VectorPrecision: tuple(VectorPrecision),
}
