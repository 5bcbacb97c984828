"""StreamIngest: documents in, one result per document out, in the order they came.

The work runs as a pipeline of threads joined by bounded queues::

    read -> prepare -> embed -> write -> results

- *read* pulls the caller's documents. When the queues behind it are full it
  stops pulling, and the transport's flow control slows the caller down: a fast
  client never makes the server buffer more than the queues hold.
- *prepare* validates, hashes and drops unchanged documents (one hash look-up
  per group, no model work), chunks the rest and packs documents into batches
  of up to ``batch_chunks`` chunks, because the model is far faster on large
  batches. A partial batch goes out as soon as the caller pauses and the model
  is idle, so a small stream is not held back waiting for more.
- *embed* runs one model pass per batch (see ``Ingestion.embed``).
- *write* stores a batch in one transaction (upserts and one binary COPY). If
  the database refuses it, each document is retried in its own transaction, so
  a bad document fails alone; either way a document is committed whole or not
  at all, and a result goes out only after its commit.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from uuid import UUID

from service import metrics
from service.core.ingestion import Ingestion
from service.core.prepared import PreparedDocument, content_sha256, unchanged_result
from service.errors import InvalidArgument, RetrievalError
from service.models import Datastore, DocumentInput, DocumentResult, IngestStatus, Principal

_log = logging.getLogger(__name__)
# A stream's pipeline threads are named THREAD_PREFIX + stage ("ingest-embed"): what
# thread dumps (py-spy, faulthandler) show, and how tests see that a stream's threads end.
THREAD_PREFIX = "ingest-"

T = TypeVar("T")


@dataclass(frozen=True)
class StreamItem:
    """One message of the stream."""

    document: DocumentInput
    datastore_id: str = ""  # as sent; "" = the stream's
    error: str = ""  # the message could not be read: the document fails with this
    size: int = 0  # bytes of the message, counted against the read-ahead


_POLL_S = 0.05  # how often a blocked stage checks whether the stream has stopped
_DRY_S = 0.01  # a caller quiet this long has paused: flush a partial batch


@dataclass(frozen=True)
class StreamLimits:
    """Sizes that bound a stream's batches and the documents it holds in memory."""

    batch_chunks: int = 1024
    batch_documents: int = 1024
    batch_chars: int = 4_000_000
    read_ahead: int = 256  # documents read but not yet prepared
    read_ahead_bytes: int = 4 * 1024 * 1024  # and their bytes (one message may exceed it)
    group: int = 256  # documents prepared together (one hash look-up)


class _Closed(Exception):
    """The stream has stopped; a stage unwinds quietly."""


class _End:
    """Marks the end of a queue's items."""


END = _End()


class _Pipe(Generic[T]):
    """A bounded queue between two stages that gives up once the stream stops."""

    def __init__(self, size: int, stop: threading.Event) -> None:
        self._queue: queue.Queue[T | _End] = queue.Queue(maxsize=size)
        self._stop = stop

    def put(self, item: T | _End) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue
        raise _Closed

    def get(self, timeout: float | None = None) -> T | _End:
        """The next item; raises queue.Empty after ``timeout`` seconds, if given."""
        waited = 0.0
        while not self._stop.is_set():
            step = _POLL_S if timeout is None else min(_POLL_S, timeout - waited)
            try:
                return self._queue.get(timeout=max(step, 0.0))
            except queue.Empty:
                waited += step
                if timeout is not None and waited >= timeout:
                    raise
        raise _Closed

    def empty(self) -> bool:
        return self._queue.empty()


class _Budget:
    """Bytes read but not yet taken: ``take`` waits while the budget is spent.

    One item larger than the whole budget still passes when nothing else is held.
    """

    def __init__(self, limit: int, stop: threading.Event) -> None:
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()
        self._stop = stop

    def take(self, size: int) -> None:
        with self._cond:
            while self._used and self._used + size > self._limit:
                if self._stop.is_set():
                    raise _Closed
                self._cond.wait(timeout=_POLL_S)
            self._used += size

    def give(self, size: int) -> None:
        with self._cond:
            self._used -= size
            self._cond.notify_all()


@dataclass
class _Entry:
    """One document's place in a batch: a final result, or a document still to write."""

    external_id: str
    result: DocumentResult | None = None
    prepared: PreparedDocument | None = None


@dataclass
class _Batch:
    entries: list[_Entry] = field(default_factory=list)
    chunks: int = 0
    chars: int = 0
    pending: set[str] = field(default_factory=set)

    def add(self, entry: _Entry) -> None:
        self.entries.append(entry)
        if entry.prepared is not None:
            self.chunks += len(entry.prepared.pieces)
            self.chars += entry.prepared.size
            self.pending.add(entry.external_id)

    def prepared(self) -> list[PreparedDocument]:
        return [e.prepared for e in self.entries if e.prepared is not None]


def _failed_result(external_id: str, error: Exception | str) -> DocumentResult:
    """A FAILED result whose message is ``error``: this document fails, the stream goes on."""
    return DocumentResult(external_id, IngestStatus.FAILED, error=str(error))


class _Run:
    """The threads of one stream: the first error stops them all."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    def spawn(self, name: str, stage: Callable[[], None], *, join: bool = True) -> None:
        def target() -> None:
            try:
                stage()
            except _Closed:
                pass
            except BaseException as e:
                if self.error is None:
                    self.error = e
                self.stop.set()

        # In the stream's context: its deadline and cancellation reach the stages' SQL.
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(target,), name=THREAD_PREFIX + name, daemon=True
        )
        if join:
            self._threads.append(thread)
        thread.start()

    def join(self, timeout: float) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout)


class StreamIngest:
    """Runs StreamIngest's pipeline over a shared ``Ingestion``."""

    def __init__(self, ingestion: Ingestion, limits: StreamLimits | None = None) -> None:
        self._ingestion = ingestion
        self.limits = limits or StreamLimits()

    def open(self, principal: Principal, datastore_id: UUID) -> Datastore:
        """The datastore a stream writes to, once the caller may write to it."""
        return self._ingestion.datastore_for_write(principal, datastore_id)

    def run(
        self, datastore: Datastore, items: Iterator[StreamItem]
    ) -> Generator[DocumentResult, None, None]:
        """One result per item of ``items``, in order; raises what stopped the stream."""
        run = _Run()
        limits = self.limits
        read: _Pipe[StreamItem] = _Pipe(limits.read_ahead, run.stop)
        budget = _Budget(limits.read_ahead_bytes, run.stop)
        prepared: _Pipe[_Batch] = _Pipe(1, run.stop)
        embedded: _Pipe[_Batch] = _Pipe(1, run.stop)
        done: _Pipe[list[DocumentResult]] = _Pipe(2, run.stop)
        # not joined: it may be blocked on the caller, and it ends with the call
        run.spawn("read", lambda: _read(items, read, budget), join=False)
        run.spawn("prepare", lambda: self._prepare(datastore, read, budget, prepared))
        run.spawn("embed", lambda: self._embed(datastore, prepared, embedded))
        run.spawn("write", lambda: self._write(datastore, embedded, done))
        try:
            while not isinstance(results := done.get(), _End):
                metrics.count_ingested(r.status for r in results)
                yield from results
        except _Closed:
            pass
        finally:
            run.join(timeout=5.0)
        if run.error is not None:
            raise run.error

    # ------------------------------------------------------------ stages

    def _prepare(
        self, datastore: Datastore, inbox: _Pipe[StreamItem], budget: _Budget, out: _Pipe[_Batch]
    ) -> None:
        batch = _Batch()
        position = 0
        ended = False
        while not ended:
            items, ended = self._take(inbox, wait=not batch.entries)
            budget.give(sum(item.size for item in items))
            for entry in self._entries(datastore, items, position):
                repeated = entry.prepared is not None and entry.external_id in batch.pending
                if repeated or self._full(batch):
                    out.put(batch)  # a repeated id goes to the next transaction
                    batch = _Batch()
                batch.add(entry)
            position += len(items)
            if batch.entries and (ended or self._full(batch) or (not items and out.empty())):
                out.put(batch)
                batch = _Batch()
        out.put(END)

    def _take(self, inbox: _Pipe[StreamItem], *, wait: bool) -> tuple[list[StreamItem], bool]:
        """Up to a group of items already read; ([], False) if none came within the wait."""
        items: list[StreamItem] = []
        try:
            first = inbox.get(timeout=None if wait else _DRY_S)
        except queue.Empty:
            return items, False
        if isinstance(first, _End):
            return items, True
        items.append(first)
        while len(items) < self.limits.group:
            try:
                item = inbox.get(timeout=0)
            except queue.Empty:
                break
            if isinstance(item, _End):
                return items, True
            items.append(item)
        return items, False

    def _full(self, batch: _Batch) -> bool:
        limits = self.limits
        return (
            batch.chunks >= limits.batch_chunks
            or len(batch.entries) >= limits.batch_documents
            or batch.chars >= limits.batch_chars
        )

    def _entries(self, datastore: Datastore, items: list[StreamItem], start: int) -> list[_Entry]:
        """Validate and hash ``items``, drop unchanged ones, chunk the rest."""
        entries = []
        valid: list[tuple[_Entry, DocumentInput, str]] = []
        for offset, item in enumerate(items):
            doc = item.document
            entry = _Entry(doc.external_id)
            entries.append(entry)
            try:
                if item.error:
                    raise InvalidArgument(item.error)
                _check_target(item.datastore_id, datastore)
                self._ingestion.validate(doc, datastore, f"documents[{start + offset}]")
                valid.append((entry, doc, content_sha256(doc, datastore)))
            except InvalidArgument as e:
                entry.result = _failed_result(doc.external_id, e)
        ids = [doc.external_id for _, doc, _ in valid]
        stored = self._ingestion.stored_versions(datastore, ids)
        for entry, doc, sha in valid:
            if (unchanged := unchanged_result(doc, sha, stored)) is not None:
                entry.result = unchanged
                continue
            try:
                entry.prepared = self._ingestion.prepare(doc, datastore, sha)
            except InvalidArgument as e:
                entry.result = _failed_result(doc.external_id, e)
        return entries

    def _embed(self, datastore: Datastore, inbox: _Pipe[_Batch], out: _Pipe[_Batch]) -> None:
        while not isinstance(batch := inbox.get(), _End):
            try:
                self._ingestion.embed(batch.prepared(), datastore)
            except RetrievalError:
                raise
            except Exception as e:
                _log.warning("embedding a batch failed (%s); embedding its documents one by one", e)
                self._embed_each(datastore, batch)
            out.put(batch)
        out.put(END)

    def _embed_each(self, datastore: Datastore, batch: _Batch) -> None:
        for entry in batch.entries:
            if entry.prepared is None:
                continue
            try:
                self._ingestion.embed([entry.prepared], datastore)
            except RetrievalError:
                raise
            except Exception as e:
                entry.prepared = None
                entry.result = _failed_result(entry.external_id, f"cannot embed: {e}")

    def _write(
        self, datastore: Datastore, inbox: _Pipe[_Batch], out: _Pipe[list[DocumentResult]]
    ) -> None:
        while not isinstance(batch := inbox.get(), _End):
            prepared = batch.prepared()
            stored = iter(self._ingestion.store_each(datastore, prepared) if prepared else [])
            results = [e.result or next(stored) for e in batch.entries]
            out.put(self._ingestion.with_token(results))
        out.put(END)


def _read(items: Iterator[StreamItem], out: _Pipe[StreamItem], budget: _Budget) -> None:
    for item in items:
        budget.take(item.size)
        out.put(item)
    out.put(END)


def _check_target(target: str, datastore: Datastore) -> None:
    if not target:
        return
    try:
        same = UUID(target) == datastore.id
    except ValueError:
        same = False
    if not same:
        raise InvalidArgument(
            f"datastore_id {target!r} differs from the stream's datastore {datastore.id}; "
            "one stream writes to one datastore"
        )
