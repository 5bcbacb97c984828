"""The bundled model through each backend: the ONNX export matches torch."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from service.embedding.registry import ModelRegistry
from service.settings import BUNDLED_MODEL
from tests.helpers.paths import MODEL_CACHE

TEXTS = [
    "What is the role of p53 in cancer?",
    "Rivers carry water to the sea.",
    "Vitamin D deficiency is associated with a higher risk of respiratory infections "
    "in adults, according to a meta-analysis of randomised controlled trials.",
    "a",
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    vectors: np.ndarray = ModelRegistry(backend="torch").get(BUNDLED_MODEL).embed(TEXTS)
    return vectors


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.sum(a * b, axis=1) / (
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    )
    return out


def test_onnx_matches_torch(torch_vectors: np.ndarray) -> None:
    model = ModelRegistry(backend="onnx", cache_dir=MODEL_CACHE).get(BUNDLED_MODEL)
    vectors = model.embed(TEXTS)
    assert vectors.shape == torch_vectors.shape == (len(TEXTS), 384)
    assert cosines(vectors, torch_vectors).min() > 0.9999


def test_onnx_single_thread_runs_in_parallel_match_the_solo_session() -> None:
    model = ModelRegistry(backend="onnx", cache_dir=MODEL_CACHE).get(BUNDLED_MODEL)
    solo = model.embed(TEXTS)
    results: dict[int, np.ndarray] = {}

    def lane(i: int) -> None:
        results[i] = model.embed(TEXTS, single_thread=True)

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 2]
    for vectors in results.values():
        assert vectors.shape == solo.shape
        np.testing.assert_allclose(vectors, solo, atol=1e-5)


def test_onnx_int8_is_a_quantized_copy_close_to_torch(torch_vectors: np.ndarray) -> None:
    model = ModelRegistry(backend="onnx-int8", cache_dir=MODEL_CACHE).get(BUNDLED_MODEL)
    vectors = model.embed(TEXTS)
    agreement = cosines(vectors, torch_vectors)
    assert agreement.min() > 0.98
    assert agreement.max() < 0.9999  # really int8, not the fp32 export
    assert any(p.name == "model-int8.onnx" for p in MODEL_CACHE.rglob("*.onnx"))
