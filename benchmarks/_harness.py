"""Shared benchmark plumbing: a real `serve` process, SciFact loading, latency statistics."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from service.client import wait_until_serving

REPO = Path(__file__).resolve().parent.parent
SCIFACT = REPO.parent / "shared" / "data" / "scifact"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served(NamedTuple):
    target: str  # host:port
    key: str  # the local API key
    pid: int  # the serve process


@contextmanager
def serve_process(data_dir: Path, log_file: Path, **settings: str) -> Iterator[Served]:
    """Run `python -m service serve` on a free port (output to ``log_file``)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRIEVAL_")}
    env.update({f"RETRIEVAL_{k.upper()}": v for k, v in settings.items()})
    env.setdefault("RETRIEVAL_HTTP_PORT", "0")  # never fight over the default 8080
    log = log_file.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    target = f"127.0.0.1:{port}"
    try:
        wait_until_serving(target)
        key = (data_dir / "api-key").read_text().strip()
        yield Served(target, key, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def load_corpus(folder: Path) -> list[dict[str, str]]:
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_queries(folder: Path) -> list[str]:
    with (folder / "queries.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def percentile(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def timed_ms(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000
