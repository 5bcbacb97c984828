"""What the rest of the service needs from an embedding model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Embedder(Protocol):
    """A loaded model: embeds texts and tokenizes for chunking."""

    name: str
    dimensions: int
    max_tokens: int  # content tokens per input, special tokens excluded

    def embed(
        self, texts: Sequence[str], *, single_thread: bool = False
    ) -> npt.NDArray[np.float32]:
        """One row per text, float32.

        ``single_thread``: the caller runs several embeds at once (one per core) and
        wants each on its own thread only. A backend that cannot do that may ignore
        it and serialize the calls.
        """
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every content token of ``text``, in order."""
        ...
