"""The embedding worker: lane threads that own the models' CPU time.

Request threads hand texts over and wait on a future. ``lanes`` threads (one per
core by default) take work from one shared queue, queries first, and run it on
one core each (``single_thread``): on a CPU, N single-thread runs side by side
gave more queries per second than any batch size (padding and the cost of
sharing one run across cores; docs/performance.md). Small jobs (queries) of the
same model can still be merged into one run (``query_batch``, with an optional
bounded wait to fill it); the default of 1 is what measured fastest. Large jobs
(ingestion) are cut into ``batch_size`` slices spread over the lanes, and queued
small jobs go first between two slices, so a query never waits behind a whole
ingestion batch.

Callers mark each query with ``with worker.query():``; a query that is the only
one in flight runs on the calling thread with every core when nothing else is
running or queued: handing it to a lane and back costs two thread wake-ups, and
one query on all cores is faster than on one. Query vectors are kept in a small
cache (``QueryCache``: agents ask the same question again).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np

from service import metrics
from service.embedding.base import Embedder
from service.embedding.registry import ModelRegistry
from service.errors import Unavailable
from service.models import Vector

_log = logging.getLogger(__name__)

_SHUTTING_DOWN = "the service is shutting down"


def available_cores() -> int:
    """CPUs this process may run on (its affinity, not the whole host)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _QueriesInFlight:
    """Counts the queries in progress (a context manager; re-entrant, no state per use)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.count -= 1


@dataclass(eq=False)  # jobs are compared by identity
class _Job:
    model: str
    texts: Sequence[str]
    kind: str = "ingest"  # or "query": for the metrics
    future: Future[np.ndarray] = field(default_factory=Future)


@dataclass(eq=False)
class _BulkJob:
    """A large job done slice by slice, shortest texts first (less padding per slice).

    Slices are handed out in order (``handed``) and may finish in any order on
    different lanes (``finished``); the last one to finish sets the result.
    """

    job: _Job
    order: list[int]
    out: np.ndarray
    handed: int = 0
    finished: int = 0
    failed: bool = False


class QueryCache:
    """The last ``size`` query vectors, least recently used out first; ``size`` 0 keeps none.

    Cached vectors are shared between callers, so they are made read-only.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._vectors: OrderedDict[tuple[str, str], Vector] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, text: str) -> Vector | None:
        """The cached vector of ``text`` under ``model``, or None (counted as a miss)."""
        key = (model, text)
        with self._lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
        metrics.count_query_cache(hit=vector is not None)
        return vector

    def put(self, model: str, text: str, vector: Vector) -> None:
        """Keep ``vector`` (made read-only) as the embedding of ``text`` under ``model``."""
        if not self._size:
            return
        vector.setflags(write=False)
        with self._lock:
            self._vectors[(model, text)] = vector
            if len(self._vectors) > self._size:
                self._vectors.popitem(last=False)


class EmbeddingWorker:
    """Runs embedding jobs on ``lanes`` threads, queries before ingestion slices."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        lanes: int = 1,
        batch_size: int = 16,
        query_batch: int = 1,
        max_wait_s: float = 0.0,
        query_cache_size: int = 1024,
    ) -> None:
        self.registry = registry
        self._models: dict[str, Embedder] = {}  # see _model
        self._cache = QueryCache(query_cache_size)
        self._queries = _QueriesInFlight()
        self._batch_size = batch_size
        self._query_batch = query_batch
        self._max_wait_s = max_wait_s
        # One lane has the machine to itself: let its runs use every core.
        self._single_thread = lanes > 1
        self._cond = threading.Condition()
        self._small: deque[_Job] = deque()
        self._bulk: deque[_BulkJob] = deque()
        self._running = 0  # model runs in progress, on lanes or on the idle fast path
        self._busy_s = 0.0  # model run time so far, summed over lanes (metrics)
        self._stopped = False
        self._lanes = [
            threading.Thread(target=self._lane, name=f"embedding-lane-{i}", daemon=True)
            for i in range(lanes)
        ]

    def start(self) -> None:
        for lane in self._lanes:
            lane.start()

    def stop(self) -> None:
        """Finish the runs in progress, fail every queued job with UNAVAILABLE."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for lane in self._lanes:
            if lane.ident is not None:  # started
                lane.join(timeout=30)
        error = Unavailable(_SHUTTING_DOWN)
        with self._cond:
            for job in self._small:
                job.future.set_exception(error)
            for bulk in self._bulk:
                bulk.failed = True
                bulk.job.future.set_exception(error)
            self._small.clear()
            self._bulk.clear()

    def query(self) -> AbstractContextManager[None]:
        """Mark a query in progress for the ``with`` block (``embed_query`` inside it).

        A query that is the only one in flight embeds on the calling thread when no
        model is running: no hand-over to a lane.
        """
        return self._queries

    def embed_query(self, model: str, text: str) -> Vector:
        """One query's embedding, from the query cache when the same text recurs."""
        vector = self._cache.get(model, text)
        if vector is None:
            alone = self._queries.count == 1
            vector = self._embed(model, [text], alone=alone, kind="query")[0]
            self._cache.put(model, text, vector)
        return vector

    def embed(self, model: str, texts: Sequence[str], *, bulk: bool = False) -> Vector:
        """Embed ingestion texts with ``model`` (blocking the caller, not the worker's
        other users). ``bulk``: background work (re-embedding), queued behind queries
        however few its texts."""
        return self._embed(model, texts, alone=False, kind="ingest", bulk=bulk)

    def _model(self, name: str) -> Embedder:
        """The loaded model ``name``. The registry resolves and loads it once (or raises,
        and the next run asks again); later runs find it here, without the registry's
        name look-up and lock on every query."""
        embedder = self._models.get(name)
        if embedder is None:
            embedder = self._models[name] = self.registry.get(name)
        return embedder

    def _embed(
        self, model: str, texts: Sequence[str], *, alone: bool, kind: str, bulk: bool = False
    ) -> Vector:
        """``alone``: no other query is in flight, so none could share the run: when no
        model is running, run on this thread. ``kind`` ('query' or 'ingest') labels
        the run in the metrics."""
        if self._stopped:
            raise Unavailable(_SHUTTING_DOWN)
        embedder = self._model(model)
        if not texts:
            return np.zeros((0, embedder.dimensions), dtype=np.float32)
        small = len(texts) <= self._batch_size and not bulk
        if alone and small and self._claim_if_idle():
            started = time.perf_counter()
            try:
                with metrics.embedding_kind(kind):
                    return embedder.embed(texts)
            finally:
                self._finish_run(started)
        job = _Job(model, texts, kind)
        with self._cond:
            if self._stopped:
                raise Unavailable(_SHUTTING_DOWN)
            if small:
                self._small.append(job)
                self._cond.notify()
            else:
                order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
                out = np.empty((len(texts), embedder.dimensions), dtype=np.float32)
                self._bulk.append(_BulkJob(job, order, out))
                self._cond.notify_all()
        result: Vector = job.future.result()
        return result

    def _claim_if_idle(self) -> bool:
        with self._cond:
            if self._small or self._bulk or self._running:
                return False
            self._running += 1
            return True

    def _finish_run(self, started: float) -> None:
        elapsed = time.perf_counter() - started
        with self._cond:
            self._running -= 1
            self._busy_s += elapsed

    def stats(self) -> metrics.EmbeddingStats:
        """The queue and lanes right now (read by the metrics at each scrape)."""
        with self._cond:
            queued = {"query": 0, "ingest": 0}
            for job in self._small:
                queued[job.kind] += len(job.texts)
            queued["ingest"] += sum(len(b.order) - b.handed for b in self._bulk)
            return metrics.EmbeddingStats(
                lanes=len(self._lanes),
                busy=self._running,
                busy_seconds=self._busy_s,
                queued_query_texts=queued["query"],
                queued_ingest_texts=queued["ingest"],
            )

    # ------------------------------------------------------------------ lane threads

    def _lane(self) -> None:
        while True:
            with self._cond:
                work = self._take_work()
                while work is None:
                    if self._stopped:
                        return
                    self._cond.wait()
                    work = self._take_work()
                self._running += 1
            started = time.perf_counter()
            try:
                work()
            finally:
                self._finish_run(started)

    def _take_work(self) -> Callable[[], None] | None:
        """The next run, queries first (called holding the lock); None when nothing is queued."""
        if self._stopped:
            return None
        if self._small:
            self._wait_to_fill()
        if self._small:
            batch = self._take_small_batch()
            return lambda: self._execute(batch)
        if self._bulk:
            bulk = self._bulk[0]
            rows = bulk.order[bulk.handed : bulk.handed + self._batch_size]
            bulk.handed += len(rows)
            if bulk.handed == len(bulk.order):
                self._bulk.popleft()  # every slice handed out; lanes finish the rest
            return lambda: self._run_slice(bulk, rows)
        return None

    def _wait_to_fill(self) -> None:
        """Wait up to max_wait_s for the oldest query's batch to fill (lock held)."""
        if self._query_batch <= 1 or self._max_wait_s <= 0:
            return
        deadline = time.monotonic() + self._max_wait_s
        while self._small and not self._stopped:
            model = self._small[0].model
            queued = sum(len(j.texts) for j in self._small if j.model == model)
            remaining = deadline - time.monotonic()
            if queued >= self._query_batch or remaining <= 0:
                return
            self._cond.wait(remaining)

    def _take_small_batch(self) -> list[_Job]:
        """The oldest small job plus same-model ones, up to ``query_batch`` texts."""
        model = self._small[0].model
        taken = [self._small.popleft()]
        size = len(taken[0].texts)
        for job in list(self._small):
            if size >= self._query_batch:
                break
            if job.model == model and size + len(job.texts) <= self._query_batch:
                taken.append(job)
                size += len(job.texts)
                self._small.remove(job)
        return taken

    def _execute(self, batch: list[_Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        try:
            embedder = self._model(batch[0].model)
            with metrics.embedding_kind(batch[0].kind):
                vectors = embedder.embed(texts, single_thread=self._single_thread)
        except Exception as e:  # each caller gets the failure, the lane lives on
            _log.exception("embedding failed")
            for job in batch:
                job.future.set_exception(e)
            return
        start = 0
        for job in batch:
            job.future.set_result(vectors[start : start + len(job.texts)])
            start += len(job.texts)

    def _run_slice(self, bulk: _BulkJob, rows: list[int]) -> None:
        if bulk.failed:
            return
        texts = [bulk.job.texts[i] for i in rows]
        try:
            embedder = self._model(bulk.job.model)
            with metrics.embedding_kind(bulk.job.kind):
                vectors = embedder.embed(texts, single_thread=self._single_thread)
        except Exception as e:
            _log.exception("embedding failed")
            with self._cond:
                if not bulk.failed:
                    bulk.failed = True
                    if bulk in self._bulk:
                        self._bulk.remove(bulk)
                    bulk.job.future.set_exception(e)
            return
        bulk.out[rows] = vectors  # disjoint rows: no lock needed for the copy
        with self._cond:
            bulk.finished += len(rows)
            if bulk.finished == len(bulk.order) and not bulk.failed:
                bulk.job.future.set_result(bulk.out)
