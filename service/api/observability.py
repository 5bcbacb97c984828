"""What the RPC wrapper records of each call: its request id, the gRPC metrics, one access line.

Everything here reads only the call's metadata, its method and the ids and counts in
its messages: never a credential, a query or a document's text.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any, TypeVar

import grpc

from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service.metrics import GRPC_HANDLED, GRPC_RECEIVED, GRPC_SECONDS, GRPC_SENT, GRPC_STARTED
from service.models import Principal

REQUEST_ID_KEY = "x-request-id"
# What a caller may send as its request id; anything else is replaced by a new one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_MAX_IDS = 8  # datastore or agent ids named in one access line; the rest are counted

_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}

access_log = logging.getLogger("service.access")

T = TypeVar("T")


def code_name(code: grpc.StatusCode) -> str:
    """The status as go-grpc-prometheus spells it: OK, NotFound, InvalidArgument, ..."""
    if code is grpc.StatusCode.OK:
        return "OK"
    return "".join(word.capitalize() for word in code.name.split("_"))


def request_id(context: grpc.ServicerContext) -> str:
    """The caller's ``x-request-id`` when it is a safe, short token; a new one otherwise."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY:
            text = value if isinstance(value, str) else value.decode("ascii", "replace")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def return_request_id(context: grpc.ServicerContext, value: str) -> None:
    """Give the caller its request id, whatever the call's outcome.

    Over HTTP it is a response header (headers go out with the response). Over gRPC it
    is trailing metadata, sent with the status, which every call has, failed or not:
    initial metadata would be an operation of its own, which the asyncio server
    completes through its event loop, about 0.2 ms a call (``benchmarks.latency_ab
    --request invalid``: 1.22 against 1.43 ms p50).
    """
    if getattr(context, "headers_go_with_the_response", False):  # HttpServicerContext
        context.send_initial_metadata(((REQUEST_ID_KEY, value),))
    else:
        context.set_trailing_metadata(((REQUEST_ID_KEY, value),))


class Rpc:
    """One RPC method: its names and its labelled metrics, looked up once."""

    def __init__(self, service: str, method: str, grpc_type: str) -> None:
        self.service = service
        self.method = method
        self.grpc_type = grpc_type
        self._labels = (grpc_type, service, method)
        self.started = GRPC_STARTED.labels(*self._labels)
        self.received = GRPC_RECEIVED.labels(*self._labels)
        self.sent = GRPC_SENT.labels(*self._labels)
        self.seconds = GRPC_SECONDS.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> Any:
        """The ``grpc_server_handled_total`` counter of this method and ``code``."""
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = GRPC_HANDLED.labels(*self._labels, code_name(code))
        return counter


_described: dict[tuple[type, str], Rpc] = {}


def describe(servicer: type, method: str) -> Rpc:
    """``servicer``'s RPC ``method``, named as in the proto."""
    key = (servicer, method)
    if key not in _described:  # a race only builds the same answer twice
        _described[key] = _lookup(servicer, method)
    return _described[key]


def _lookup(servicer: type, method: str) -> Rpc:
    for base in servicer.__mro__:
        service = pb.DESCRIPTOR.services_by_name.get(base.__name__.removesuffix("Servicer"))
        if service is not None and method in service.methods_by_name:
            found = service.methods_by_name[method]
            kind = _TYPES[(found.client_streaming, found.server_streaming)]
            return Rpc(service.full_name, method, kind)
    return Rpc(servicer.__name__, method, "unary")


def _text(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


class _Ids:
    """The datastore and agent ids a call names, bounded, and only ever as UUIDs."""

    def __init__(self) -> None:
        self.named: dict[str, list[str]] = {}
        self.more: dict[str, int] = {}

    def add(self, kind: str, value: str) -> None:
        if not value:
            return
        try:
            value = str(uuid.UUID(value))
        except ValueError:
            value = "invalid"  # never echo a caller's arbitrary string
        named = self.named.setdefault(kind, [])
        if value in named:
            return
        if len(named) < _MAX_IDS:
            named.append(value)
        else:
            self.more[kind] = self.more.get(kind, 0) + 1

    def add_from(self, message: Any, service: str) -> None:
        fields = message.DESCRIPTOR.fields_by_name
        for name in ("datastore_id", "agent_id"):
            if name in fields:
                self.add(name, getattr(message, name))
        if "id" in fields:  # Get/Delete of a datastore or an agent; Create's response
            self.add("agent_id" if service.endswith("AgentService") else "datastore_id", message.id)
        if isinstance(getattr(message, "datastores", None), pb.DatastoreIds):  # Query
            for value in message.datastores.ids:
                self.add("datastore_id", value)
        if isinstance(getattr(message, "datastore", None), pb.Datastore):  # UpdateDatastore
            self.add("datastore_id", message.datastore.id)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, named in self.named.items():
            out[f"{kind}s"] = named + ([f"+{self.more[kind]}"] if kind in self.more else [])
        return out


class Call:
    """One RPC in progress: started when built, recorded once by ``end``."""

    def __init__(self, servicer: object, method: str, context: grpc.ServicerContext) -> None:
        self.rpc = describe(type(servicer), method)
        self.request_id = request_id(context)
        self.principal: Principal | None = None
        self._started = time.perf_counter()
        self._ids = _Ids()
        self._counts: dict[str, int] = {}
        self._ended = False
        self.rpc.started.inc()
        return_request_id(context, self.request_id)

    def received(self, request: Any) -> None:
        self.rpc.received.inc()
        if not hasattr(request, "DESCRIPTOR"):  # bytes that did not parse (api/decoding.py)
            return
        if self._counts.get("received", 0) == 0:
            self._ids.add_from(request, self.rpc.service)
        self._counts["received"] = self._counts.get("received", 0) + 1
        if "documents" in request.DESCRIPTOR.fields_by_name and self.rpc.grpc_type == "unary":
            self._counts["documents"] = len(request.documents)

    def sent(self, response: Any) -> None:
        self.rpc.sent.inc()
        self._counts["sent"] = self._counts.get("sent", 0) + 1
        fields = response.DESCRIPTOR.fields_by_name
        if "hits" in fields:
            self._counts["hits"] = len(response.hits)
        if "results" in fields:
            self._counts["documents"] = len(response.results)
        if "deleted_count" in fields:
            self._counts["documents"] = response.deleted_count
        if "id" in fields and not self._ids.named:  # a Create: name what it made
            self._ids.add_from(response, self.rpc.service)

    def requests(self, requests: Iterator[T]) -> Iterator[T]:
        """``requests``, counted as they arrive."""
        for request in requests:
            self.received(request)
            yield request

    def responses(self, responses: Iterator[T]) -> Iterator[T]:
        """``responses``, counted as they leave."""
        for response in responses:
            self.sent(response)
            yield response

    def end(self, code: grpc.StatusCode) -> None:
        """Record the call's outcome (only the first ``end`` counts)."""
        if self._ended:
            return
        self._ended = True
        seconds = time.perf_counter() - self._started
        self.rpc.handled(code).inc()
        self.rpc.seconds.observe(seconds)
        if access_log.isEnabledFor(logging.INFO):
            text, fields = self._line(code, seconds)
            access_log.info("%s", text, extra={"access": fields})

    def _line(self, code: grpc.StatusCode, seconds: float) -> tuple[str, dict[str, Any]]:
        p = self.principal
        fields: dict[str, Any] = {
            "method": f"/{self.rpc.service}/{self.rpc.method}",
            "code": code_name(code),
            "duration_ms": round(seconds * 1000, 3),
            "request_id": self.request_id,
            "principal": str(p.user_id) if p else None,
            "role": str(p.role) if p else None,
            "key_id": str(p.key_id) if p and p.key_id else None,
            **self._ids.fields(),
        }
        counts = self._counts
        if self.rpc.grpc_type != "unary":
            fields["messages_in"] = counts.get("received", 0)
            fields["messages_out"] = counts.get("sent", 0)
        for name in ("hits", "documents"):
            if name in counts:
                fields[name] = counts[name]
        fields = {k: v for k, v in fields.items() if v is not None}
        text = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        return text, fields
