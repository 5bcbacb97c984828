"""Shared benchmark plumbing: a real `serve` process, SciFact loading, latency statistics,
a process's CPU time and memory."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from devtools.serve_process import REPO, ServeProcess, free_port

__all__ = [
    "REPO",
    "SCIFACT",
    "Served",
    "cpu_seconds",
    "free_port",
    "load_corpus",
    "load_queries",
    "percentile",
    "read_jsonl",
    "rss_bytes",
    "serve_process",
    "timed_ms",
]

SCIFACT = REPO.parent / "shared" / "data" / "scifact"


class Served(NamedTuple):
    target: str  # host:port
    key: str  # the local API key
    pid: int  # the serve process


@contextmanager
def serve_process(data_dir: Path, log_file: Path, **settings: str) -> Iterator[Served]:
    """``python -m service serve`` on free ports (output to ``log_file``), as
    (target, key, pid); ``http_port`` among ``settings`` fixes the HTTP port."""
    http_port = settings.pop("http_port", None)
    with ServeProcess(
        data_dir,
        log=log_file,
        settings=settings,
        http_port=None if http_port is None else int(http_port),
    ) as served:
        yield Served(served.target, served.key, served.pid)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_corpus(folder: Path) -> list[dict[str, str]]:
    return read_jsonl(folder / "corpus.jsonl")


def load_queries(folder: Path) -> list[str]:
    return [q["text"] for q in read_jsonl(folder / "queries.jsonl")]


def percentile(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def timed_ms(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a process (with its reaped children, if asked), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int, *, peak: bool = False) -> int:
    """A process's resident memory now (VmRSS) or at its peak (VmHWM), in bytes."""
    field = "VmHWM:" if peak else "VmRSS:"
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith(field))
    return int(line.split()[1]) * 1024
