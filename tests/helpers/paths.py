"""Where the tests find the repository, the shared data and the exported models."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
# Exported ONNX models outlive a test session (the export takes a while); .venv is ours.
MODEL_CACHE = REPO / ".venv" / "model-cache"
