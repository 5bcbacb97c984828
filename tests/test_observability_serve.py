"""`python -m service serve` with JSON logs and RETRIEVAL_METRICS_PORT, as an operator runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from contextlib import closing
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service.app import App
from service.client import connect, pb, wait_until_serving
from service.models import Role
from tests.helpers.paths import MODEL_CACHE
from tests.test_serve import free_port


def test_json_logs_and_metrics_port(app: App, pg_url: str, tmp_path: Path) -> None:
    user = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    key = app.identity.create_key(user, Role.USER).key
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRIEVAL_")}
    env |= {
        "DATABASE_URL": pg_url,  # the session's database: the key above is valid there
        "RETRIEVAL_ONNX_CACHE_DIR": str(MODEL_CACHE),
        "RETRIEVAL_CREATE_LOCAL_KEY": "false",
        "RETRIEVAL_LOG_FORMAT": "json",
        "RETRIEVAL_METRICS_PORT": str(metrics_port),
    }
    command = [sys.executable, "-m", "service", "serve", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    question = f"what do quokkas eat {uuid.uuid4().hex}"
    try:
        wait_until_serving(f"127.0.0.1:{port}")
        with closing(connect(f"127.0.0.1:{port}", key)) as client:
            ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="served"))
            _, call = client.retrieval.Query.with_call(
                pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds.id]), text=question)
            )
        request_id = dict(call.initial_metadata())["x-request-id"]
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            exposition = reply.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert f"Prometheus metrics on http://127.0.0.1:{metrics_port}/metrics" in out

    handled = {
        s.labels["grpc_method"]: s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == "grpc_server_handled_total" and s.labels["grpc_code"] == "OK"
    }
    assert handled == {"CreateDatastore": 1.0, "Query": 1.0}  # a fresh process: exact counts

    # Every log line is one JSON object (other stderr lines come from C libraries).
    assert not [line for line in err.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    [access] = [e for e in lines if e.get("request_id") == request_id]
    assert access["logger"] == "service.access"
    assert access["method"] == "/agentopia.retrieval.v1.RetrievalService/Query"
    assert access["code"] == "OK" and access["duration_ms"] > 0
    assert access["datastore_ids"] == [ds.id] and access["hits"] == 0
    assert key not in err + out and question not in err + out
