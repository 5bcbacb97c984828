"""Connect endpoints for the gRPC servicers: the same objects and wrapper, called over HTTP.

Each RPC of the four services becomes a connectrpc endpoint whose handler runs the
servicer's method (already wrapped by ``service/api/rpc.py``) in a worker thread
with an ``HttpServicerContext``. Nothing here authenticates or maps errors: the
wrapper does, and its ``context.abort`` raises the Connect error.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import Endpoint
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service.api.aio_bridge import BUSY
from service.api.http.context import HttpServicerContext
from service.api.limits import Gate

SERVICES: tuple[ServiceDescriptor, ...] = tuple(pb.DESCRIPTOR.services_by_name.values())

STREAM_INGEST_UNSUPPORTED = (
    "StreamIngest is a bidirectional stream, which Connect and gRPC-Web over HTTP/1.1 "
    "cannot carry: over HTTP send IngestDocuments batches; StreamIngest runs on the gRPC port"
)


def method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def build_endpoints(
    servicers: Mapping[str, object], executor: Executor, gate: Gate
) -> dict[str, Endpoint[Any, Any]]:
    """``{"/pkg.Service/Method": endpoint}`` for every RPC of ``SERVICES``.

    ``servicers`` maps a service's short name (``RetrievalService``) to its servicer.
    A call runs on ``executor`` only with a slot of ``gate`` (the gRPC port's, when both
    run): past its bound it is refused at once, never queued for a thread.
    """
    endpoints: dict[str, Endpoint[Any, Any]] = {}
    for service in SERVICES:
        servicer = servicers[service.name]
        for method in service.methods:
            info = method_info(method)
            if method.client_streaming or method.server_streaming:
                endpoints[method_path(method)] = Endpoint.bidi_stream(info, _unsupported_stream)
                continue
            handler = getattr(servicer, method.name)
            endpoints[method_path(method)] = Endpoint.unary(info, _unary(handler, executor, gate))
    return endpoints


def method_info(method: MethodDescriptor) -> MethodInfo[Any, Any]:
    streams = {
        (False, False): StreamType.UNARY,
        (True, False): StreamType.CLIENT_STREAM,
        (False, True): StreamType.SERVER_STREAM,
        (True, True): StreamType.BIDI_STREAM,
    }
    return MethodInfo(
        name=method.name,
        service_name=method.containing_service.full_name,
        input=message_factory.GetMessageClass(method.input_type),
        output=message_factory.GetMessageClass(method.output_type),
        idempotency_level=IdempotencyLevel.UNKNOWN,
        stream_type=streams[(method.client_streaming, method.server_streaming)],
    )


def _unary(
    handler: Callable[[Any, HttpServicerContext], Any], executor: Executor, gate: Gate
) -> Callable[[Any, RequestContext[Any, Any]], Any]:
    def run(request: Any, context: HttpServicerContext) -> Any:
        try:
            return handler(request, context)
        finally:
            gate.leave()  # when the thread is free, not when the caller stops waiting

    async def call(request: Any, ctx: RequestContext[Any, Any]) -> Any:
        if not gate.try_enter():
            raise ConnectError(Code.RESOURCE_EXHAUSTED, BUSY)
        context = HttpServicerContext(ctx)
        loop = asyncio.get_running_loop()
        try:
            # A deadline or a disconnect cancels this await; the thread then sees
            # is_active() False and its callbacks have run, as under gRPC.
            response = await loop.run_in_executor(
                executor, functools.partial(run, request, context)
            )
        finally:
            context.finish()
        context.raise_if_failed()
        return response

    return call


async def _unsupported_stream(
    requests: AsyncIterator[Any], ctx: RequestContext[Any, Any]
) -> AsyncIterator[Any]:
    raise ConnectError(Code.UNIMPLEMENTED, STREAM_INGEST_UNSUPPORTED)
    yield  # pragma: no cover - makes this an async generator
