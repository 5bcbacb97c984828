"""Protobuf <-> domain conversions for every message family (the servicers only call these)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from service import config_fields
from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service.core.agents import AgentFields
from service.core.datastore_config import FIELDS as CONFIG_FIELDS
from service.core.datastore_config import ConfigRequest
from service.core.datastores import DatastoreFields
from service.core.validation import not_json_number, parse_uuid
from service.errors import InvalidArgument
from service.models import (
    Agent,
    AgentDatastoreLink,
    ChunkInput,
    Datastore,
    DatastoreConfig,
    Document,
    DocumentInput,
    DocumentResult,
    IngestStatus,
    JsonObject,
    Metric,
    ReembedStatus,
    SearchMode,
    StoredChunk,
    VectorPrecision,
)
from service.query_models import DatastoreReport, Hit, QueryResult, QuerySpec

METRIC_TO_PB = {
    Metric.COSINE: pb.COSINE,
    Metric.EUCLIDEAN: pb.EUCLIDEAN,
    Metric.DOT: pb.DOT,
    Metric.MANHATTAN: pb.MANHATTAN,
}
METRIC_FROM_PB = {v: k for k, v in METRIC_TO_PB.items()}
MODE_TO_PB = {
    SearchMode.VECTOR: pb.VECTOR,
    SearchMode.HYBRID: pb.HYBRID,
    SearchMode.KEYWORD: pb.KEYWORD,
}
MODE_FROM_PB = {v: k for k, v in MODE_TO_PB.items()}
STATUS_TO_PB = {
    IngestStatus.CREATED: pb.CREATED,
    IngestStatus.UPDATED: pb.UPDATED,
    IngestStatus.UNCHANGED: pb.UNCHANGED,
    IngestStatus.FAILED: pb.FAILED,
}


def metric_from_pb(value: int) -> Metric | None:
    if value == pb.SIMILARITY_METRIC_UNSPECIFIED:
        return None
    if value not in METRIC_FROM_PB:
        raise InvalidArgument(f"similarity_metric {value} is not a known metric")
    return METRIC_FROM_PB[value]  # type: ignore[index]


PRECISION_TO_PB = {
    VectorPrecision.FLOAT32: pb.VECTOR_PRECISION_FLOAT32,
    VectorPrecision.FLOAT16: pb.VECTOR_PRECISION_FLOAT16,
}
PRECISION_FROM_PB = {v: k for k, v in PRECISION_TO_PB.items()}


def precision_from_pb(value: int) -> VectorPrecision | None:
    if value == pb.VECTOR_PRECISION_UNSPECIFIED:
        return None
    if value not in PRECISION_FROM_PB:
        raise InvalidArgument(f"config.vector_precision {value} is not a known precision")
    return PRECISION_FROM_PB[value]  # type: ignore[index]


def mode_from_pb(value: int) -> SearchMode | None:
    if value == pb.SEARCH_MODE_UNSPECIFIED:
        return None
    if value not in MODE_FROM_PB:
        raise InvalidArgument(f"mode {value} is not a known search mode")
    return MODE_FROM_PB[value]  # type: ignore[index]


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def struct(value: JsonObject) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def from_struct(value: struct_pb2.Struct, field: str) -> JsonObject:
    try:
        data: dict[str, Any] = json_format.MessageToDict(value)
    except ValueError as e:  # protobuf refuses NaN and infinities
        raise not_json_number(field) from e
    return data


# ------------------------------------------------------------------ datastores


# A StrEnum config field's protobuf enum: from protobuf (0 = unset -> None), to protobuf.
_ENUMS: dict[type[Any], tuple[Callable[[int], Any], Mapping[Any, int]]] = {
    SearchMode: (mode_from_pb, MODE_TO_PB),
    VectorPrecision: (precision_from_pb, PRECISION_TO_PB),
}


def _slot(config: Message, path: str, *, write: bool = False) -> tuple[Message, str]:
    """The (sub)message holding a config field and the field's name there."""
    *groups, name = path.split(".")
    for group in groups:
        config = getattr(config, group)
        if write:
            config.SetInParent()
    return config, name


def config_request(config: pb.DatastoreConfig) -> ConfigRequest:
    """The fields a caller set (an ``optional`` one only when present)."""
    values: dict[str, Any] = {}
    for f in CONFIG_FIELDS:
        message, name = _slot(config, f.path)
        if message.DESCRIPTOR.fields_by_name[name].has_presence and not message.HasField(name):
            continue
        value = getattr(message, name)
        values[f.path] = _ENUMS[f.kind][0](value) if f.kind in _ENUMS else value
    return ConfigRequest(values)


def datastore_config(c: DatastoreConfig) -> pb.DatastoreConfig:
    out = pb.DatastoreConfig()
    for f in CONFIG_FIELDS:
        message, name = _slot(out, f.path, write=True)
        value = config_fields.get(c, f.path)
        setattr(message, name, _ENUMS[f.kind][1][value] if f.kind in _ENUMS else value)
    return out


def create_datastore_fields(request: pb.CreateDatastoreRequest) -> DatastoreFields:
    return DatastoreFields(
        name=request.name,
        description=request.description,
        type=request.type,
        metric=metric_from_pb(request.similarity_metric),
        similarity_threshold=(
            request.similarity_threshold if request.HasField("similarity_threshold") else None
        ),
        max_results=request.max_results if request.HasField("max_results") else None,
        config=config_request(request.config),
    )


def update_datastore_fields(datastore: pb.Datastore) -> DatastoreFields:
    return DatastoreFields(
        name=datastore.name,
        description=datastore.description,
        metric=metric_from_pb(datastore.similarity_metric),
        similarity_threshold=datastore.similarity_threshold,
        max_results=datastore.max_results,
        config=config_request(datastore.config),
    )


def datastore(d: Datastore) -> pb.Datastore:
    return pb.Datastore(
        id=str(d.id),
        user_id=str(d.user_id),
        name=d.name,
        description=d.description,
        type=d.type,
        config=datastore_config(d.config),
        similarity_metric=METRIC_TO_PB[d.metric],
        similarity_threshold=d.similarity_threshold,
        max_results=d.max_results,
        created_at=timestamp(d.created_at),
        updated_at=timestamp(d.updated_at),
        document_count=d.document_count,
        chunk_count=d.chunk_count,
        reembed=None if d.reembed is None else reembed_status(d.reembed),
    )


def reembed_status(r: ReembedStatus) -> pb.ReembedStatus:
    return pb.ReembedStatus(
        state=r.state,
        chunks_done=r.chunks_done,
        chunks_total=r.chunks_total,
        target_model=r.target_model,
        error=r.error,
    )


# ------------------------------------------------------------------ agents


def agent_fields(request: pb.CreateAgentRequest) -> AgentFields:
    return AgentFields(
        name=request.name,
        description=request.description,
        system_instructions=request.system_instructions,
        assistant_instructions=request.assistant_instructions,
        active=request.active,
    )


def agent(a: Agent) -> pb.Agent:
    return pb.Agent(
        id=str(a.id),
        user_id=str(a.user_id),
        name=a.name,
        description=a.description,
        system_instructions=a.system_instructions,
        assistant_instructions=a.assistant_instructions,
        active=a.active,
        created_at=timestamp(a.created_at),
        updated_at=timestamp(a.updated_at),
    )


def link(a: AgentDatastoreLink) -> pb.AgentDatastore:
    return pb.AgentDatastore(
        id=str(a.id),
        agent_id=str(a.agent_id),
        datastore_id=str(a.datastore_id),
        created_at=timestamp(a.created_at),
    )


# ------------------------------------------------------------------ documents


def document_input(doc: pb.DocumentInput, where: str) -> DocumentInput:
    """The document as the core sees it; ``where`` (e.g. ``documents[3]``) names it in errors."""
    return DocumentInput(
        external_id=doc.external_id,
        title=doc.title,
        source=doc.source,
        text=doc.text,
        chunks=tuple(
            ChunkInput(
                content=c.content,
                vector=np.asarray(c.vector, dtype=np.float32) if c.vector else None,
                metadata=from_struct(c.metadata, f"{where}.chunks[{j}].metadata"),
            )
            for j, c in enumerate(doc.chunks)
        ),
        metadata=from_struct(doc.metadata, f"{where}.metadata"),
    )


def document_result(r: DocumentResult) -> pb.DocumentResult:
    return pb.DocumentResult(
        external_id=r.external_id,
        document_id=str(r.document_id) if r.document_id else "",
        status=STATUS_TO_PB[r.status],
        chunk_count=r.chunk_count,
        error=r.error,
        consistency_token=r.consistency_token,
    )


def document(d: Document) -> pb.Document:
    return pb.Document(
        id=str(d.id),
        datastore_id=str(d.datastore_id),
        external_id=d.external_id,
        title=d.title,
        source=d.source,
        content_sha256=d.content_sha256,
        metadata=struct(d.metadata),
        chunk_count=d.chunk_count,
        created_at=timestamp(d.created_at),
        updated_at=timestamp(d.updated_at),
    )


def chunk(c: StoredChunk) -> pb.Chunk:
    return pb.Chunk(
        id=c.id,
        chunk_index=c.chunk_index,
        content=c.content,
        metadata=struct(c.metadata),
        token_count=c.token_count,
    )


# ------------------------------------------------------------------ retrieval


def query_spec(request: pb.QueryRequest) -> QuerySpec:
    target = request.WhichOneof("target")
    if target is None:
        raise InvalidArgument("name a target: datastores.ids or agent_id")
    query = request.WhichOneof("query")
    if query is None:
        raise InvalidArgument("send a query: text or vector")
    return QuerySpec(
        datastore_ids=tuple(
            parse_uuid(i, f"datastores.ids[{n}]") for n, i in enumerate(request.datastores.ids)
        )
        if target == "datastores"
        else (),
        agent_id=parse_uuid(request.agent_id, "agent_id") if target == "agent_id" else None,
        text=request.text if query == "text" else None,
        vector=np.asarray(request.vector.values, dtype=np.float32) if query == "vector" else None,
        max_results=request.max_results if request.HasField("max_results") else None,
        similarity_threshold=(
            request.similarity_threshold if request.HasField("similarity_threshold") else None
        ),
        mode=mode_from_pb(request.mode),
        distinct_documents=request.distinct_documents,
        exact=request.exact,
        filter=from_struct(request.filter, "filter") if request.HasField("filter") else None,
        consistency_token=request.consistency_token,
    )


def hit(h: Hit) -> pb.Hit:
    return pb.Hit(
        datastore_id=str(h.datastore_id),
        document_id=str(h.document_id),
        external_id=h.external_id,
        chunk_id=h.chunk_id,
        chunk_index=h.chunk_index,
        title=h.title,
        content=h.content,
        metadata=struct(h.metadata),
        score=h.score,
        distance=h.distance,
        below_threshold=h.below_threshold,
        vector_score=h.vector_score,
        keyword_score=h.keyword_score,
    )


def report(r: DatastoreReport) -> pb.DatastoreReport:
    if r.skipped_reason:
        return pb.DatastoreReport(
            datastore_id=str(r.datastore_id), skipped=True, skipped_reason=r.skipped_reason
        )
    assert r.metric is not None and r.mode is not None
    return pb.DatastoreReport(
        datastore_id=str(r.datastore_id),
        similarity_metric=METRIC_TO_PB[r.metric],
        similarity_threshold=r.similarity_threshold,
        max_results=r.max_results,
        hit_count=r.hit_count,
        fallback=r.fallback,
        mode=MODE_TO_PB[r.mode],
    )


def query_response(result: QueryResult) -> pb.QueryResponse:
    return pb.QueryResponse(
        hits=[hit(h) for h in result.hits],
        datastores=[report(r) for r in result.reports],
        truncated=result.truncated,
    )
