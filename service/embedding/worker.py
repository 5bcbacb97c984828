"""The embedding worker: one thread that owns the models' CPU time.

Request threads hand texts over and wait on a future, so embedding runs off the
gRPC threads; concurrent small requests for the same model are merged into one
batch (bounded wait, bounded size), which is far faster per text on a CPU.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
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


class EmbeddingWorker:
    """Batches embedding jobs per model on a dedicated thread."""

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
        self._thread = threading.Thread(target=self._run, name="embedding-worker", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=10)

    def embed(self, model: str, texts: Sequence[str]) -> Vector:
        """Embed ``texts`` with ``model`` (blocking the caller, not the worker's other users)."""
        if self._stopped:
            raise Unavailable("the service is shutting down")
        if not texts:
            return np.zeros((0, self.registry.get(model).dimensions), dtype=np.float32)
        job = _Job(model, texts)
        self._queue.put(job)
        result: Vector = job.future.result()
        return result

    def embed_query(self, model: str, text: str) -> Vector:
        """One query's embedding, from a small LRU cache when the same text recurs."""
        key = (model, text)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        vector: Vector = self.embed(model, [text])[0]
        if self._cache_size:
            vector.setflags(write=False)  # shared between callers
            with self._cache_lock:
                self._cache[key] = vector
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vector

    def _run(self) -> None:
        pending: list[_Job] = []
        while True:
            if not pending:
                job = self._queue.get()
                if job is None:
                    return
                pending.append(job)
            batch, pending = self._take_batch(pending)
            self._execute(batch)

    def _take_batch(self, pending: list[_Job]) -> tuple[list[_Job], list[_Job]]:
        """The first job plus whatever same-model jobs arrive within the wait."""
        first = pending[0]
        batch: list[_Job] = [first]
        rest: list[_Job] = []
        size = len(first.texts)
        for job in pending[1:]:
            (batch if job.model == first.model else rest).append(job)
        deadline = time.monotonic() + self._max_wait_s
        while size < self._max_batch:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                more = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if more is None:
                self._queue.put(None)  # handle the stop after this batch
                break
            if more.model == first.model:
                batch.append(more)
                size += len(more.texts)
            else:
                rest.append(more)
        return batch, rest

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
