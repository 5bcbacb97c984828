"""A second embedding model for tests, built offline from the bundled one.

Only all-MiniLM-L6-v2 ships with the project. This derives a deterministic second
model from it: the same transformer and mean pooling, then a fixed-seed linear
projection to 256 dimensions and normalisation (a sentence-transformers ``Dense``
layer), saved as a sentence-transformers directory. It embeds differently, at a
different dimension, and the service loads it like any local model (torch backend).
"""

from __future__ import annotations

import warnings
from pathlib import Path

SECOND_MODEL_DIMENSIONS = 256


def build_second_model(target: Path) -> Path:
    """Write the derived model into ``target`` (a new directory); returns it."""
    import torch
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        # sentence-transformers 6 moved the module classes; the alias still saves the
        # model under the names the service's loaders read.
        warnings.filterwarnings(
            "ignore", "Importing from 'sentence_transformers.models'", DeprecationWarning
        )
        from sentence_transformers import models  # type: ignore[attr-defined]

    from service.embedding.registry import bundled_model_path

    base = SentenceTransformer(str(bundled_model_path()), device="cpu", local_files_only=True)
    transformer, pooling = base[0], base[1]
    torch.manual_seed(20_251_202)
    dense = models.Dense(
        in_features=384,
        out_features=SECOND_MODEL_DIMENSIONS,
        bias=False,
        activation_function=torch.nn.Identity(),
    )
    model = SentenceTransformer(
        modules=[transformer, pooling, dense, models.Normalize()], device="cpu"
    )
    model.save(str(target))
    return target
