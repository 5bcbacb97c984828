"""Recent query embeddings by (model, text): agents ask the same question again."""

from __future__ import annotations

import threading
from collections import OrderedDict

from service import metrics
from service.models import Vector


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
