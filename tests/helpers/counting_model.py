"""A tiny deterministic embedding model and a worker over it (no real model needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from service.embedding.worker import EmbeddingWorker


class CountingModel:
    """Embeds a text as [len(text), 1]; records every batch it ran."""

    name = "counting"
    dimensions = 2
    max_tokens = 100

    def __init__(self, delay_s: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.threads: list[str] = []  # the thread that ran each batch
        self.single_thread: list[bool] = []
        self.most_at_once = 0  # the most runs in progress together
        self._running = 0
        self._lock = threading.Lock()
        self._delay_s = delay_s
        self._fail_on = fail_on

    def embed(
        self, texts: Sequence[str], *, single_thread: bool = False
    ) -> npt.NDArray[np.float32]:
        with self._lock:
            self.batches.append(list(texts))
            self.threads.append(threading.current_thread().name)
            self.single_thread.append(single_thread)
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        try:
            time.sleep(self._delay_s)
            if self._fail_on is not None and self._fail_on in texts:
                raise RuntimeError("model failure")
            return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)
        finally:
            with self._lock:
                self._running -= 1

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return []


class OneModel:
    def __init__(self, model: CountingModel) -> None:
        self.model = model

    def get(self, name: str) -> CountingModel:
        return self.model


def make_worker(model: CountingModel, **kw: Any) -> EmbeddingWorker:
    worker = EmbeddingWorker(OneModel(model), **kw)  # type: ignore[arg-type]
    worker.start()
    return worker
