"""The ONNX Runtime backend: the same model, exported locally once, ~2-3x faster on a CPU.

The export runs from the packaged weights with ``torch.onnx`` on first use and is
cached in the data directory (no network, no optimum). Inference uses
onnxruntime and the model's own ``tokenizer.json`` through ``tokenizers``,
padding each batch only to its longest input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service import metrics

_log = logging.getLogger(__name__)

# Inputs per onnxruntime call, sorted by length so padding stays small. 16 beat 32
# and 64 for SciFact passages on a 2-core CPU (docs/performance.md).
_SUB_BATCH = 16


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def supports(path: Path) -> bool:
    """True for BERT-style sentence-transformers folders with mean pooling."""
    pooling = path / "1_Pooling" / "config.json"
    modules = path / "modules.json"
    kinds = (
        [m.get("type", "").rsplit(".", 1)[-1] for m in json.loads(modules.read_text("utf-8"))]
        if modules.exists()
        else []
    )
    # Only Transformer -> mean Pooling (-> Normalize): no Dense or other heads to replicate.
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return False
    return (
        (path / "tokenizer.json").exists()
        and (path / "model.safetensors").exists()
        and pooling.exists()
        and bool(_read_json(pooling).get("pooling_mode_mean_tokens"))
    )


def _fingerprint(path: Path) -> str:
    """Identifies the weights, so a changed model is exported again."""
    weights = path / "model.safetensors"
    stat = weights.stat()
    return hashlib.sha256(
        f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    ).hexdigest()[:16]


def export_onnx(model_path: Path, target: Path) -> None:
    """Export the transformer to ONNX (dynamic batch and sequence axes), atomically."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_path), local_files_only=True).eval()

    class _Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = tuple(torch.ones((1, 8), dtype=torch.int64) for _ in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        # Tracing warns about data-dependent branches it freezes; expected for a fixed graph.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Encoder(model),
                dummy,
                tmp,
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of ``source``'s weights, atomically.

    Per-channel scales: with one scale per tensor some texts' vectors drifted to a
    cosine of 0.90 against fp32 (SciFact sample), per channel the worst was 0.987.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, per_channel=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class OnnxEmbedder:
    """Mean-pooled (and, if the model says so, normalised) embeddings via onnxruntime.

    Two sessions over the same file: the solo one uses ``threads`` intra-op threads
    (lowest latency for one query on an idle machine); the single-thread one runs on
    the calling thread only and takes concurrent calls, so N callers use N cores
    with no locking (higher throughput than any batch on a CPU; see
    docs/performance.md). The single-thread session is opened on first use.

    ``int8``: run a dynamically quantized copy (int8 weights), faster at a small,
    measured quality cost (docs/performance.md).
    """

    def __init__(
        self, name: str, path: Path, cache_dir: Path, *, threads: int = 0, int8: bool = False
    ) -> None:
        from tokenizers import Tokenizer

        self.name = name
        onnx_file = cache_dir / f"{path.name}-{_fingerprint(path)}" / "model.onnx"
        if not onnx_file.exists():
            _log.info("exporting %s to ONNX at %s (once)", name, onnx_file)
            export_onnx(path, onnx_file)
        if int8:
            quantized = onnx_file.with_name("model-int8.onnx")
            if not quantized.exists():
                _log.info("quantizing %s to int8 at %s (once)", name, quantized)
                quantize_int8(onnx_file, quantized)
            onnx_file = quantized
        self._onnx_file = onnx_file
        self._session = self._open(threads)
        self._single_thread_session: Any = None
        window = int(_read_json(path / "sentence_bert_config.json").get("max_seq_length", 512))
        self.max_tokens = window - 2
        self.dimensions = int(_read_json(path / "config.json")["hidden_size"])
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        self._normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(window)
        self._bare = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._bare.no_padding()
        self._bare.no_truncation()
        self._lock = threading.Lock()  # one solo run at a time: it already uses every core

    def _open(self, threads: int) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(
            str(self._onnx_file), options, providers=["CPUExecutionProvider"]
        )

    def embed(
        self, texts: Sequence[str], *, single_thread: bool = False
    ) -> npt.NDArray[np.float32]:
        if single_thread:
            with self._lock:
                if self._single_thread_session is None:
                    self._single_thread_session = self._open(1)
            session, lock = self._single_thread_session, None
        else:
            session, lock = self._session, self._lock
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), _SUB_BATCH):
            rows = order[start : start + _SUB_BATCH]
            out[rows] = self._run(session, lock, [encodings[i] for i in rows])
        metrics.count_embedded(len(texts), sum(len(e.ids) for e in encodings))
        return out

    def _run(
        self, session: Any, lock: threading.Lock | None, encodings: list[Any]
    ) -> npt.NDArray[np.float32]:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = 1
            types[row, :n] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if lock is None:
            (hidden,) = session.run(["last_hidden_state"], feeds)
        else:
            with lock:
                (hidden,) = session.run(["last_hidden_state"], feeds)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self._normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        result: npt.NDArray[np.float32] = pooled.astype(np.float32)
        return result

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoding = self._bare.encode(text, add_special_tokens=False)
        return [(int(a), int(b)) for a, b in encoding.offsets]
