"""The embedding worker: one thread that owns the models' CPU time.

Request threads hand texts over and wait on a future. Small jobs (queries) for
the same model are merged into one batch (bounded size; an optional bounded wait
for more to arrive), which is far faster per text on a CPU: while the model runs,
arriving queries queue up and go together in the next batch. Large jobs
(ingestion) run in slices, and queued small jobs go first between two slices, so
a query never waits behind a whole ingestion batch.

A query that is the only one in flight (the caller knows) runs on the calling
thread when the model is idle and nothing is queued: handing it to the worker and
back costs two thread wake-ups and would batch it with nothing. With other
queries in flight it goes through the worker, so they can share a batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from service.embedding.registry import ModelRegistry
from service.errors import Unavailable
from service.models import Vector

_log = logging.getLogger(__name__)


@dataclass
class _Job:
    model: str
    texts: Sequence[str]
    future: Future[np.ndarray] = field(default_factory=Future)


@dataclass
class _BulkJob:
    """A large job done slice by slice, shortest texts first (less padding per slice)."""

    job: _Job
    order: list[int]
    out: np.ndarray | None = None
    done: int = 0


class EmbeddingWorker:
    """Batches embedding jobs per model on a dedicated thread, queries first."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.002,
        query_cache_size: int = 1024,
    ) -> None:
        self.registry = registry
        self._cache_size = query_cache_size
        self._cache: OrderedDict[tuple[str, str], Vector] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._small: list[_Job] = []
        self._bulk: deque[_BulkJob] = deque()
        # Held while a model runs, by the worker or by a caller on the idle fast path.
        self._model_busy = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="embedding-worker", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def embed(self, model: str, texts: Sequence[str], *, alone: bool = False) -> Vector:
        """Embed ``texts`` with ``model`` (blocking the caller, not the worker's other users).

        ``alone``: no other query is in flight, so no batch could form: when the model
        is idle, run on this thread.
        """
        if self._stopped:
            raise Unavailable("the service is shutting down")
        if not texts:
            return np.zeros((0, self.registry.get(model).dimensions), dtype=np.float32)
        small = len(texts) <= self._max_batch
        if alone and small and self._idle() and self._model_busy.acquire(blocking=False):
            try:
                return self.registry.get(model).embed(texts)
            finally:
                self._model_busy.release()
        job = _Job(model, texts)
        self._queue.put(job)
        result: Vector = job.future.result()
        return result

    def embed_query(self, model: str, text: str, *, alone: bool = False) -> Vector:
        """One query's embedding, from a small LRU cache when the same text recurs."""
        key = (model, text)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        vector: Vector = self.embed(model, [text], alone=alone)[0]
        if self._cache_size:
            vector.setflags(write=False)  # shared between callers
            with self._cache_lock:
                self._cache[key] = vector
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vector

    def _idle(self) -> bool:
        """Nothing queued for the worker (read without a lock: a hint, not a promise)."""
        return self._queue.empty() and not self._small and not self._bulk

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while True:
            idle = not self._small and not self._bulk
            if not self._accept(block=idle, timeout=None):
                break
            if self._small:
                batch = self._take_small_batch()
                with self._model_busy:
                    self._execute(batch)
            elif self._bulk:
                with self._model_busy:
                    self._run_slice()
        self._fail_pending()

    def _accept(self, *, block: bool, timeout: float | None) -> bool:
        """Move queued jobs to the small or bulk lists; False once stop was asked."""
        try:
            job = self._queue.get(block=block, timeout=timeout)
        except queue.Empty:
            return True
        while True:
            if job is None:
                return False
            if len(job.texts) > self._max_batch:
                texts = job.texts
                order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
                self._bulk.append(_BulkJob(job, order))
            else:
                self._small.append(job)
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return True

    def _take_small_batch(self) -> list[_Job]:
        """The oldest small job plus same-model ones, waiting briefly for more to arrive."""
        deadline = time.monotonic() + self._max_wait_s
        while True:
            model = self._small[0].model
            batch = [j for j in self._small if j.model == model]
            size = sum(len(j.texts) for j in batch)
            timeout = deadline - time.monotonic()
            if size >= self._max_batch or timeout <= 0:
                break
            if not self._accept(block=True, timeout=timeout):
                self._queue.put(None)  # stop after this batch
                break
        taken: list[_Job] = []
        size = 0
        for job in list(self._small):
            if job.model == model and size + len(job.texts) <= self._max_batch:
                taken.append(job)
                size += len(job.texts)
                self._small.remove(job)
        return taken

    def _execute(self, batch: list[_Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        try:
            vectors = self.registry.get(batch[0].model).embed(texts)
        except Exception as e:  # each caller gets the failure, the worker lives on
            _log.exception("embedding failed")
            for job in batch:
                job.future.set_exception(e)
            return
        start = 0
        for job in batch:
            job.future.set_result(vectors[start : start + len(job.texts)])
            start += len(job.texts)

    def _run_slice(self) -> None:
        bulk = self._bulk[0]
        rows = bulk.order[bulk.done : bulk.done + self._max_batch]
        try:
            vectors = self.registry.get(bulk.job.model).embed([bulk.job.texts[i] for i in rows])
        except Exception as e:
            _log.exception("embedding failed")
            self._bulk.popleft()
            bulk.job.future.set_exception(e)
            return
        if bulk.out is None:
            bulk.out = np.empty((len(bulk.job.texts), vectors.shape[1]), dtype=np.float32)
        bulk.out[rows] = vectors
        bulk.done += len(rows)
        if bulk.done == len(bulk.order):
            self._bulk.popleft()
            bulk.job.future.set_result(bulk.out)

    def _fail_pending(self) -> None:
        error = Unavailable("the service is shutting down")
        for job in [*self._small, *(b.job for b in self._bulk)]:
            job.future.set_exception(error)
        self._small.clear()
        self._bulk.clear()
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                return
            if queued is not None:
                queued.future.set_exception(error)
