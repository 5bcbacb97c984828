"""The wrapper every RPC runs in: authenticate, call the core, map errors to a status."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import grpc

from service import call_scope
from service.api.decoding import check_decoded, check_request, checked_stream
from service.api.errors import status_for
from service.api.limits import principal_slot
from service.api.observability import Call
from service.core.identity import Identity
from service.errors import Unauthenticated
from service.models import Principal

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class HasIdentity(Protocol):
    identity: Identity


S = TypeVar("S", bound=HasIdentity)


def bearer_token(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value if isinstance(value, str) else value.decode()
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <api key>'")
            return token.strip()
    raise Unauthenticated("missing 'authorization: Bearer <api key>' metadata")


def authenticated(
    method: Callable[[S, Req, Principal], Resp],
) -> Callable[[S, Req, grpc.ServicerContext], Resp]:
    """Run ``method(self, request, principal)`` for an authenticated caller."""

    @functools.wraps(method)
    def wrapper(self: S, request: Req, context: grpc.ServicerContext) -> Resp:
        call = Call(self, method.__name__, context)  # request id, metrics, access log
        call.received(request)
        try:
            # The deadline and cancellation reach the database (service/call_scope.py).
            with call_scope.opened(context.time_remaining()) as scope:
                context.add_callback(scope.cancel)  # the client cancelled or went away
                principal = call.principal = self.identity.authenticate(bearer_token(context))
                check_request(check_decoded(request))
                with principal_slot(principal):
                    response = method(self, request, principal)
        except Exception as e:
            code, message = status_for(e)
            call.end(code)
            context.abort(code, message)
        call.sent(response)
        call.end(grpc.StatusCode.OK)
        return response

    return wrapper


def authenticated_stream(
    method: Callable[[S, Iterator[Req], Principal], Iterator[Resp]],
) -> Callable[[S, Iterator[Req], grpc.ServicerContext], Iterator[Resp]]:
    """Like ``authenticated``, for a method that streams its responses."""

    @functools.wraps(method)
    def wrapper(self: S, requests: Iterator[Req], context: grpc.ServicerContext) -> Iterator[Resp]:
        call = Call(self, method.__name__, context)
        try:
            with call_scope.opened(context.time_remaining()) as scope:
                context.add_callback(scope.cancel)
                principal = call.principal = self.identity.authenticate(bearer_token(context))
                stream = call.requests(checked_stream(requests))
                with principal_slot(principal):
                    yield from call.responses(method(self, stream, principal))
        except Exception as e:
            if not context.is_active():
                return  # the client is gone (cancelled, disconnected): no one to tell
            code, message = status_for(e)
            call.end(code)
            context.abort(code, message)
        finally:  # a clean end, or the client went away (the generator was closed)
            call.end(grpc.StatusCode.OK if context.is_active() else grpc.StatusCode.CANCELLED)

    return wrapper
