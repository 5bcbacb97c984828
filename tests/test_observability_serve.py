"""`python -m service serve` with JSON logs and RETRIEVAL_METRICS_PORT, as an operator runs it."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from contextlib import closing
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from devtools.serve_process import ServeProcess, free_port
from service.app import App
from service.client import connect, pb
from service.models import Role
from tests.helpers.paths import MODEL_CACHE


def test_json_logs_and_metrics_port(app: App, pg_url: str, tmp_path: Path) -> None:
    user = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    key = app.identity.create_key(user, Role.USER).key
    metrics_port = free_port()
    settings = {
        "onnx_cache_dir": MODEL_CACHE,
        "create_local_key": False,
        "log_format": "json",
        "metrics_port": metrics_port,
    }
    env = {"DATABASE_URL": pg_url}  # the session's database: the key above is valid there
    served = ServeProcess(tmp_path / "data", log=tmp_path / "serve.log", settings=settings, env=env)
    question = f"what do quokkas eat {uuid.uuid4().hex}"
    with served:
        with closing(connect(served.target, key)) as client:
            ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="served"))
            _, call = client.retrieval.Query.with_call(
                pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds.id]), text=question)
            )
        request_id = dict(call.trailing_metadata())["x-request-id"]
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            exposition = reply.read().decode()
        assert served.stop() == 0
    output = served.output()  # stdout and stderr
    assert f"Prometheus metrics on http://127.0.0.1:{metrics_port}/metrics" in output

    handled = {
        s.labels["grpc_method"]: s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == "grpc_server_handled_total" and s.labels["grpc_code"] == "OK"
    }
    assert handled == {"CreateDatastore": 1.0, "Query": 1.0}  # a fresh process: exact counts

    # Every log line is one JSON object (other lines come from print and C libraries).
    assert not [line for line in output.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    [access] = [e for e in lines if e.get("request_id") == request_id]
    assert access["logger"] == "service.access"
    assert access["method"] == "/agentopia.retrieval.v1.RetrievalService/Query"
    assert access["code"] == "OK" and access["duration_ms"] > 0
    assert access["datastore_ids"] == [ds.id] and access["hits"] == 0
    assert key not in output and question not in output
