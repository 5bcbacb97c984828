"""Graceful shutdown (issue 18): on SIGTERM `serve` finishes calls in flight, streams commit
what they read and end UNAVAILABLE, and an ingest job carries on on the next server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from devtools.serve_process import ServeProcess
from service.app import App
from service.client import connect, pb
from service.models import Role
from service.settings import Settings
from tests.helpers.ingest_cli import assert_consistent, datastore_counts, run_cli


def _corpus(path: Path, n: int) -> Path:
    """``n`` short documents (about 15 tokens each)."""
    with path.open("w") as f:
        for i in range(n):
            text = f"Rollout note {i}. " + " ".join(f"term{(i * 13 + j) % 991}" for j in range(6))
            f.write(json.dumps({"_id": f"r{i}", "title": f"R{i}", "text": text}) + "\n")
    return path


@pytest.fixture
def key(app: App) -> str:
    return app.identity.create_key(app.identity.create_user(None), Role.USER).key


@contextmanager
def serving(settings: Settings, data_dir: Path, **update: object) -> Iterator[ServeProcess]:
    """`serve` in a subprocess on the tests' database, with some settings changed."""
    patient = settings.model_copy(update=update)
    log = data_dir.parent / "server.log"
    with ServeProcess(data_dir, log=log, settings=patient, ready_timeout_s=180) as server:
        yield server


def _wait(condition: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_finishes_the_unary_call_in_flight(
    app: App, settings: Settings, key: str, tmp_path: Path
) -> None:
    # a long grace: a loaded machine may take a while to embed the batch
    with serving(settings, tmp_path / "server", shutdown_grace_s=120.0) as server:
        _finishes_in_flight(app, server, key)


def _finishes_in_flight(app: App, server_process: ServeProcess, key: str) -> None:
    client = connect(server_process.target, key)
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="inflight"))
    docs = [
        pb.DocumentInput(external_id=f"d{i}", text=f"Document {i} about graceful shutdown. " * 40)
        for i in range(60)
    ]
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["response"] = client.ingest.IngestDocuments(
                pb.IngestDocumentsRequest(datastore_id=ds.id, documents=docs), timeout=120
            )
        except grpc.RpcError as e:
            outcome["error"] = e

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(1.0)  # the call is being embedded now (it takes several seconds)
    assert worker.is_alive()
    started = time.monotonic()
    proc = server_process.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    worker.join(timeout=120)
    proc.wait(timeout=60)
    print(f"the call finished {time.monotonic() - started:.1f} s after SIGTERM")
    client.close()
    assert "error" not in outcome, outcome
    response = outcome["response"]
    assert isinstance(response, pb.IngestDocumentsResponse)
    assert [r.status for r in response.results] == [pb.CREATED] * len(docs)
    assert proc.returncode == 0
    counts = datastore_counts(app, ds.id)
    assert counts["documents"] == len(docs)
    assert_consistent(counts)


def test_an_ingest_job_carries_on_across_a_rolling_restart(
    app: App, settings: Settings, key: str, tmp_path: Path
) -> None:
    # a small read-ahead, so that the job is still sending when the server stops
    update = {"shutdown_grace_s": 60.0, "stream_read_ahead_bytes": 64 * 1024}
    with serving(settings, tmp_path / "server", **update) as server:
        _job_across_restart(app, server, key, tmp_path)


def _job_across_restart(app: App, server_process: ServeProcess, key: str, tmp_path: Path) -> None:
    # more documents than a stream holds in the server (read-ahead, a batch in each stage)
    n = 6000
    corpus = _corpus(tmp_path / "corpus.jsonl", n)
    client = connect(server_process.target, key)
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="rollout"))
    client.close()
    args = [sys.executable, "-m", "ingest", str(corpus), "-d", ds.id]
    args += ["--target", server_process.target, "--api-key", key, "--progress", "never"]
    job = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: datastore_counts(app, ds.id)["documents"] > 0, timeout=300)
        proc = server_process.proc
        assert proc is not None
        proc.terminate()  # SIGTERM: the stream commits what it read, ends UNAVAILABLE
        assert proc.wait(timeout=180) == 0
        during = datastore_counts(app, ds.id)
        assert_consistent(during)
        assert during["documents"] < n
        server_process.start()  # the new version, same database and port
        out, _ = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()  # reaps it and closes its stdout pipe
    assert job.returncode == 0, out.decode()[-2000:]
    after = datastore_counts(app, ds.id)
    assert after["documents"] == after["chunks"] == n
    assert_consistent(after)
    code, summary = run_cli(server_process.target, key, corpus, "-d", ds.id)
    assert code == 0
    assert summary["unchanged"] == n
    assert summary["created"] == summary["updated"] == summary["failed"] == 0
