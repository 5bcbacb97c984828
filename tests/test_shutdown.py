"""Graceful shutdown (issue 18): on SIGTERM `serve` finishes calls in flight, streams commit
what they read and end UNAVAILABLE, and an ingest job carries on on the next server."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

from service.app import App
from service.client import Client, connect, pb
from service.settings import Settings
from tests.test_ingest_cli import (  # noqa: F401 (fixtures)
    ServerProcess,
    _free_port,
    assert_consistent,
    cli_user,
    datastore_counts,
    run_cli,
    server_process,
    small_corpus,
)


def _wait(condition: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_finishes_the_unary_call_in_flight(
    app: App, settings: Settings, cli_user: tuple[str, Client], tmp_path: Path
) -> None:
    # a long grace: this shared machine may take a while to embed the batch
    patient = settings.model_copy(update={"shutdown_grace_s": 120.0})
    server_process = ServerProcess(patient, tmp_path, _free_port())
    server_process.start()
    key, _ = cli_user
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
    app: App, cli_user: tuple[str, Client], server_process: ServerProcess, tmp_path: Path
) -> None:
    n = 3000
    corpus = small_corpus(tmp_path / "corpus.jsonl", n)
    key, client = cli_user
    ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="rollout"))
    args = [sys.executable, "-m", "ingest", str(corpus), "-d", ds.id]
    args += ["--target", server_process.target, "--api-key", key, "--progress", "never"]
    job = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: datastore_counts(app, ds.id)["documents"] > 0)
        server_process.stop()  # SIGTERM: the stream commits what it read, ends UNAVAILABLE
        assert server_process.proc is not None and server_process.proc.returncode == 0
        during = datastore_counts(app, ds.id)
        assert_consistent(during)
        assert during["documents"] < n
        server_process.start()  # the new version, same database and port
        out, _ = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, out.decode()[-2000:]
    after = datastore_counts(app, ds.id)
    assert after["documents"] == after["chunks"] == n
    assert_consistent(after)
    code, summary = run_cli(server_process.target, key, corpus, "-d", ds.id)
    assert code == 0
    assert summary["unchanged"] == n
    assert summary["created"] == summary["updated"] == summary["failed"] == 0
