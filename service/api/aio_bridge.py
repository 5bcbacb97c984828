"""Runs the synchronous servicers under ``grpc.aio``, one thread per admitted call.

grpcio's synchronous server reads a call's request message inside one of its
worker threads, so a few clients that open calls and never send a message hold
every thread (issue 18). Here the event loop reads messages, and a call reaches
a thread only once its request is in: an idle call costs a coroutine, not a
thread. A call past the gate's bound is refused at once (RESOURCE_EXHAUSTED);
the executor has as many threads as the gate has slots, so none waits for one.

Streams: the loop reads ahead at most ``read_ahead_bytes`` of messages per
stream, and a caller silent for ``idle_timeout_s`` while the server waits for
its next message (its thread has nothing queued to work on) ends the call with
DEADLINE_EXCEEDED. Time the server spends on what it was sent never counts: a
client may wait for those results before it sends more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from grpc import aio

from service.api.limits import Gate, PrincipalSlots, current_slots

_log = logging.getLogger(__name__)
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the stubs
BUSY = "server busy: too many calls in flight; retry with backoff"
SHUTTING_DOWN = "server shutting down: resume on a new stream (committed documents are kept)"
_WRITE_TIMEOUT_S = 60.0
_BUSY_RECHECK_S = 1.0  # while a stream's thread is busy, how often its idle clock is read
FIRST = asyncio.FIRST_COMPLETED  # a response the client does not take for this long ends the stream


class Aborted(Exception):
    """``SyncContext.abort``: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class SyncContext:
    """What a synchronous servicer sees of its call (grpc.ServicerContext's methods it uses)."""

    def __init__(self, context: aio.ServicerContext[Any, Any], loop: asyncio.AbstractEventLoop):
        self._context = context
        self._loop = loop
        self._active = True
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        # The initial metadata's send, started on the loop as soon as the servicer sets
        # them and awaited before the first message or the status: it overlaps the
        # servicer's work instead of adding a round trip after it.
        self._initial_sent: asyncio.Future[None] | None = None

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return tuple(self._context.invocation_metadata() or ())

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)

    def is_active(self) -> bool:
        return self._active

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` once the call ends (finished, cancelled or timed out)."""
        with self._lock:
            if self._active:
                self._callbacks.append(callback)
                return True
        return False

    def send_initial_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        """Starts the send on the loop and returns at once (the thread never waits for it)."""
        self._loop.call_soon_threadsafe(self._start_initial, tuple(metadata))

    def _start_initial(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        if self._initial_sent is None:  # gRPC sends initial metadata once
            self._initial_sent = asyncio.ensure_future(self._send_initial(metadata))

    async def _send_initial(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        # It fails only when the call is over (client gone, deadline): its end says so.
        with contextlib.suppress(Exception):
            await self._context.send_initial_metadata(metadata)

    async def flush_initial_metadata(self) -> None:
        """On the loop: wait for the initial metadata's send, if the servicer set any.

        Callbacks from the servicer's thread run on the loop in the order they were made,
        so a send it started before returning (or writing) has started by now.
        """
        if self._initial_sent is not None:
            await self._initial_sent

    async def write(self, response: Any) -> None:
        """On the loop: one response message, after the initial metadata."""
        await self.flush_initial_metadata()
        await self._context.write(response)

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._context.set_trailing_metadata(tuple(metadata))

    def peer(self) -> str:
        return str(self._context.peer())

    def finish(self, servicer_returned: bool = False) -> None:
        """The call is over: it is no longer active, and its callbacks run (off the loop).

        ``servicer_returned``: the servicer's own code has ended, so callbacks, which
        only tell it that its client went away, have no one left to tell: they are
        dropped instead of costing a thread wake-up on every call.
        """
        with self._lock:
            self._active = False
            callbacks, self._callbacks = self._callbacks, []
        if servicer_returned:
            return
        for callback in callbacks:
            self._loop.run_in_executor(None, callback)


_END = object()


def _size(message: object) -> int:
    """Bytes of a message: a protobuf's encoded size, raw bytes' length, else 0 (an
    ``Undecodable`` stand-in: its bytes are already gone)."""
    byte_size = getattr(message, "ByteSize", None)
    if byte_size is not None:
        return int(byte_size())
    return len(message) if isinstance(message, bytes | bytearray) else 0


class _Feed:
    """A stream's messages, read on the loop and taken by the call's thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limit_bytes: int,
        idle_s: float,
        draining: asyncio.Event,
    ) -> None:
        self._loop = loop
        self._draining = draining
        self.drained = False
        self.arrived = asyncio.Event()  # the first message (or the end) is in
        self._limit = limit_bytes
        self._idle_s = idle_s
        self._items: deque[tuple[object, int]] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._space = asyncio.Event()
        self.idle = False
        # Since when the call's thread has waited for a message with none queued (None:
        # it is busy with one). Only that wait counts towards the idle timeout: a client
        # waiting for the results of what it sent is not idle, however slow the server.
        self._waiting_since: float | None = time.monotonic()

    async def pump(self, context: aio.ServicerContext[Any, Any]) -> None:
        """Read messages until the end, holding at most ``limit_bytes`` unread by the thread."""
        try:
            while True:
                while self._bytes >= self._limit:
                    self._space.clear()
                    await self._space.wait()
                read = asyncio.ensure_future(context.read())
                drain = asyncio.ensure_future(self._draining.wait())
                while not (read.done() or drain.done()):
                    left = self._idle_left()
                    if left <= 0:
                        break
                    await asyncio.wait({read, drain}, timeout=left, return_when=FIRST)
                drain.cancel()
                if not read.done():
                    read.cancel()
                    self.drained = self._draining.is_set()
                    self.idle = not self.drained
                    return
                message = read.result()
                if message is aio.EOF:
                    return
                with self._cond:
                    size = _size(message)
                    self._items.append((message, size))
                    self._bytes += size
                    self._cond.notify()
                self.arrived.set()
        finally:
            with self._cond:
                self._items.append((_END, 0))
                self._cond.notify()
            self.arrived.set()

    def _idle_left(self) -> float:
        """Seconds before the stream counts as idle; while the call's thread is busy, the
        next look (the thread may start waiting in the meantime) is at most 1 s away."""
        with self._cond:
            since = self._waiting_since
        if since is None:
            return min(self._idle_s, _BUSY_RECHECK_S)
        return self._idle_s - (time.monotonic() - since)

    def __iter__(self) -> Iterator[Any]:
        while True:
            with self._cond:
                if not self._items and self._waiting_since is None:
                    self._waiting_since = time.monotonic()
                while not self._items:
                    self._cond.wait(timeout=1.0)
                self._waiting_since = None
                message, size = self._items.popleft()
                self._bytes -= size
            if size:
                self._loop.call_soon_threadsafe(self._space.set)
            if message is _END:
                self._items.appendleft((_END, 0))  # later calls end too
                return
            yield message


@dataclass
class Runner:
    """Admits calls and runs them on the executor."""

    loop: asyncio.AbstractEventLoop
    gate: Gate
    slots: PrincipalSlots
    read_ahead_bytes: int
    idle_timeout_s: float

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(
            max_workers=self.gate.limit,
            thread_name_prefix="rpc",
            initializer=current_slots.set,
            initargs=(self.slots,),
        )
        self.draining = asyncio.Event()

    def drain(self) -> None:
        """Shutting down: streams stop reading, finish what they read, end UNAVAILABLE."""
        self.draining.set()

    def _call(self, fn: Callable[..., Any], arg: Any, call: SyncContext) -> Any:
        try:
            result = fn(arg, call)
            if isinstance(result, Generator):
                try:
                    self._send_all(result, call)
                finally:
                    result.close()  # unwinds the servicer at once if the call ended early
                return None
            return result
        finally:
            self.gate.leave()

    def _send_all(self, responses: Iterator[Any], call: SyncContext) -> None:
        for response in responses:
            if not call.is_active():
                return
            write = asyncio.run_coroutine_threadsafe(call.write(response), self.loop)
            try:
                write.result(timeout=_WRITE_TIMEOUT_S)
            except Exception:
                if call.is_active():
                    raise
                return  # the call ended (cancelled, timed out) while we wrote

    async def run(
        self,
        fn: Callable[..., Any],
        arg: Any,
        context: aio.ServicerContext[Any, Any],
    ) -> Any:
        if not self.gate.try_enter():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY)
        call = SyncContext(context, self.loop)
        try:
            response = await self.loop.run_in_executor(self.executor, self._call, fn, arg, call)
        except asyncio.CancelledError:
            call.finish()  # the client went away while the servicer runs: tell it
            raise
        except Aborted as e:
            call.finish(servicer_returned=True)
            await call.flush_initial_metadata()
            await context.abort(e.code, e.details)
        except BaseException:
            call.finish(servicer_returned=True)
            raise
        call.finish(servicer_returned=True)
        await call.flush_initial_metadata()
        return response

    async def run_stream(
        self, fn: Callable[..., Any], context: aio.ServicerContext[Any, Any]
    ) -> None:
        feed = _Feed(self.loop, self.read_ahead_bytes, self.idle_timeout_s, self.draining)
        pump = asyncio.create_task(feed.pump(context))
        try:
            await feed.arrived.wait()  # a stream takes a thread once its first message is in
            if feed.idle:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self._idle_message())
            if not self.gate.try_enter():
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY)
            await self._stream_admitted(fn, context, feed, pump)
        finally:
            pump.cancel()

    async def _stream_admitted(
        self,
        fn: Callable[..., Any],
        context: aio.ServicerContext[Any, Any],
        feed: _Feed,
        pump: asyncio.Task[None],
    ) -> None:
        call = SyncContext(context, self.loop)
        work = self.loop.run_in_executor(self.executor, self._call, fn, iter(feed), call)
        try:
            await asyncio.wait({pump, work}, return_when=asyncio.FIRST_COMPLETED)
            if feed.idle:
                call.finish()  # the servicer unwinds quietly: the status is ours
                await call.flush_initial_metadata()
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self._idle_message())
            await work
            await call.flush_initial_metadata()  # a stream that wrote nothing
            if pump.done() and not pump.cancelled() and pump.exception() is not None:
                # the stream was cut short by a read error: its end was not the caller's
                _log.error("reading a stream failed", exc_info=pump.exception())
                raise Aborted(grpc.StatusCode.INTERNAL, "reading the stream failed (logged)")
            if feed.drained:
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        except Aborted as e:
            call.finish()
            await call.flush_initial_metadata()
            await context.abort(e.code, e.details)
        finally:
            call.finish()

    def _idle_message(self) -> str:
        return f"no message for {self.idle_timeout_s:g} s while the server waited for one"

    def wrap(self, handler: Handler) -> Handler:
        """An aio handler that runs ``handler``'s synchronous behaviour through this runner."""
        if not handler.request_streaming and not handler.response_streaming:
            fn = handler.unary_unary
            assert fn is not None

            async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                return await self.run(fn, request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.request_streaming and handler.response_streaming:
            stream_fn = handler.stream_stream
            assert stream_fn is not None

            async def stream(_requests: Any, context: aio.ServicerContext[Any, Any]) -> None:
                await self.run_stream(stream_fn, context)

            return grpc.stream_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        raise ValueError("only unary-unary and stream-stream methods are bridged")
