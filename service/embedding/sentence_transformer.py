"""sentence-transformers models loaded from a local folder (never from a hub)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service import metrics


class SentenceTransformerEmbedder:
    """A sentence-transformers model on the CPU; thread-safe ``embed``.

    torch keeps one intra-op thread pool per process, so concurrent calls are
    serialized and ``single_thread`` is ignored.
    """

    def __init__(self, name: str, path: Path, *, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self._model: Any = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self._batch_size = batch_size
        self._lock = threading.Lock()
        dimensions = self._model.get_embedding_dimension()
        window = self._model.max_seq_length
        if dimensions is None or window is None:
            raise ValueError(f"{path} does not declare its embedding size and max_seq_length")
        self.dimensions: int = dimensions
        # the model's window includes [CLS] and [SEP]
        self.max_tokens: int = window - 2
        self._tokenizer: Any = self._model.tokenizer

    def embed(
        self, texts: Sequence[str], *, single_thread: bool = False
    ) -> npt.NDArray[np.float32]:
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        # The torch path is not the fast one: tokenizing again to count is affordable here.
        ids = self._tokenizer(list(texts), truncation=True, max_length=self.max_tokens + 2)
        metrics.count_embedded(len(texts), sum(len(i) for i in ids["input_ids"]))
        return np.asarray(vectors, dtype=np.float32)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoded = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"]]
