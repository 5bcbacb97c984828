"""Counting results as they come, the progress bar, and the final summary."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Protocol

STATUSES = ("created", "updated", "unchanged", "failed")


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def close(self) -> None: ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int | None, *, enabled: bool) -> Progress:
    """A bar with documents/s and an ETA on stderr, or nothing when ``enabled`` is false."""
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    bar: Progress = tqdm(total=total, unit="doc", dynamic_ncols=True, smoothing=0.05)
    return bar


class Tally:
    """Results so far, and the failures with their reasons; safe to share between threads."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.counts = dict.fromkeys(STATUSES, 0)
        self.failures: list[tuple[str, str]] = []
        self._progress = progress or _NoProgress()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._finished: float | None = None

    def add(self, status: str, external_id: str, error: str = "") -> None:
        with self._lock:
            self.counts[status] += 1
            if status == "failed":
                self.failures.append((external_id, error))
            self._progress.update(1)

    def finish(self) -> None:
        with self._lock:
            if self._finished is None:
                self._finished = time.monotonic()
                self._progress.close()

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def seconds(self) -> float:
        end = self._finished if self._finished is not None else time.monotonic()
        return end - self._started

    def summary(self) -> dict[str, Any]:
        seconds = self.seconds
        return {
            **self.counts,
            "documents": self.done,
            "seconds": round(seconds, 3),
            "docs_per_s": round(self.done / seconds, 3) if seconds > 0 else 0.0,
        }

    def summary_line(self) -> str:
        s = self.summary()
        parts = ", ".join(f"{s[k]} {k}" for k in STATUSES)
        rate = f"{s['docs_per_s']:.1f} docs/s"
        return f"{s['documents']} documents in {s['seconds']:.1f} s ({rate}): {parts}"


def write_failures(path: Path, failures: list[tuple[str, str]]) -> None:
    """One line per failed document: its id, a tab, the reason (on one line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for external_id, reason in failures:
            f.write(f"{external_id}\t{' '.join(reason.split())}\n")
