"""The Supabase Edge Function example, run in Deno against the live HTTP port.

Its JSON must carry the same hits, scores and low-confidence labels as the same
agent query made through the Python gRPC client. Deno runs offline (``--cached-only``)
from the cache ``make install`` filled (``deno cache`` into the example's ``.deno``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.client import connect, pb
from tests.helpers.paths import REPO
from tests.helpers.rpc import struct

EXAMPLE = REPO / "examples" / "supabase-edge-function"
DENO = Path(sys.executable).parent / "deno"
LONG = " ".join(["PostgreSQL with pgvector stores embeddings next to the rows they describe."] * 9)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def edge_function(**env: str) -> Iterator[str]:
    assert DENO.exists(), f"{DENO} is missing: `make install` installs PyPI deno"
    assert (EXAMPLE / ".deno").is_dir(), "the example's Deno cache is missing: run `make install`"
    port = free_port()
    proc = subprocess.Popen(
        [
            str(DENO),
            "run",
            "--cached-only",
            "--no-prompt",
            "--allow-net=127.0.0.1",
            "--allow-env",
            "--config",
            "deno.json",
            "index.ts",
        ],
        cwd=EXAMPLE,
        env={
            **os.environ,
            "DENO_DIR": str(EXAMPLE / ".deno"),
            "NO_COLOR": "1",
            "PORT": str(port),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the edge function never listened"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # reaps it and closes its stdout pipe


def ask(url: str, body: dict[str, Any], bearer: str | None = None) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def agent_with_two_datastores(target: str, key: str) -> str:
    """One datastore whose threshold passes the good hit, one whose threshold nothing passes."""
    client = connect(target, key)
    try:
        agent = client.agents.CreateAgent(pb.CreateAgentRequest(name="edge"))
        for name, threshold, docs in [
            ("passes", 0.3, [("pg", LONG), ("cat", "Cats sleep most of the day.")]),
            ("strict", 0.99, [("bread", "Sourdough rises slowly with wild yeast.")]),
        ]:
            ds = client.datastores.CreateDatastore(
                pb.CreateDatastoreRequest(name=name, similarity_threshold=threshold, max_results=3)
            )
            client.ingest.IngestDocuments(
                pb.IngestDocumentsRequest(
                    datastore_id=ds.id,
                    documents=[
                        pb.DocumentInput(
                            external_id=i, text=t, metadata=struct({"source": f"{i}.md"})
                        )
                        for i, t in docs
                    ],
                )
            )
            client.agents.AttachDatastore(
                pb.AttachDatastoreRequest(agent_id=agent.id, datastore_id=ds.id)
            )
        return agent.id
    finally:
        client.close()


def python_hits(target: str, key: str, agent_id: str, text: str) -> list[pb.Hit]:
    client = connect(target, key)
    try:
        return list(client.retrieval.Query(pb.QueryRequest(agent_id=agent_id, text=text)).hits)
    finally:
        client.close()


def check_same_hits(answer: dict[str, Any], want: list[pb.Hit], preview_length: int) -> None:
    got = answer["memories"]
    assert [(m["datastoreId"], m["externalId"], int(m["chunkId"])) for m in got] == [
        (h.datastore_id, h.external_id, h.chunk_id) for h in want
    ]
    assert [(m["score"], m["distance"], m["lowConfidence"]) for m in got] == [
        (h.score, h.distance, h.below_threshold) for h in want
    ]
    for memory, hit in zip(got, want, strict=True):
        cut = hit.content[:preview_length]
        assert memory["preview"] == (cut + "…" if len(hit.content) > preview_length else cut)
        assert memory["source"] == f"{hit.external_id}.md"
    context = answer["context"]
    labels = [line for line in context.splitlines() if line.startswith("Memory (")]
    assert [line.startswith("Memory (low confidence, ") for line in labels] == [
        h.below_threshold for h in want
    ]


def test_edge_function_answers_like_the_python_client(
    http_url: str, target: str, new_key: Callable[..., str]
) -> None:
    key = new_key()
    agent_id = agent_with_two_datastores(target, key)
    relevant = "where are embeddings stored in postgres?"
    unrelated = "gluon fields in quantum chromodynamics"  # nothing passes: the fallback answers
    want = {q: python_hits(target, key, agent_id, q) for q in (relevant, unrelated)}
    assert want[relevant] and not any(h.below_threshold for h in want[relevant])
    assert want[unrelated] and all(h.below_threshold for h in want[unrelated])
    with edge_function(RETRIEVAL_URL=http_url, RETRIEVAL_API_KEY=key) as url:
        status, answer = ask(url, {"agentId": agent_id, "message": relevant})
        assert status == 200, answer
        check_same_hits(answer, want[relevant], 400)
        assert answer["context"].startswith("Here are some relevant memories")
        assert sorted(d["similarityThreshold"] for d in answer["datastores"]) == [0.3, 0.99]
        assert {d["similarityMetric"] for d in answer["datastores"]} == {"cosine"}

        status, answer = ask(url, {"agent_id": agent_id, "message": unrelated})
        assert status == 200, answer
        check_same_hits(answer, want[unrelated], 400)
        assert answer["context"].startswith("No memories passed the similarity threshold")

        missing = "00000000-0000-0000-0000-000000000000"
        status, answer = ask(url, {"agentId": missing, "message": relevant})
        assert (status, answer["code"]) == (404, "NotFound")


def test_edge_function_forwards_the_callers_token_when_configured(
    http_url: str, target: str, new_key: Callable[..., str]
) -> None:
    key = new_key()
    agent_id = agent_with_two_datastores(target, key)
    question = "where are embeddings stored in postgres?"
    want = python_hits(target, key, agent_id, question)
    assert any(len(h.content) > 12 for h in want)
    env = {
        "RETRIEVAL_URL": http_url,
        "RETRIEVAL_AUTH": "supabase-jwt",
        "RETRIEVAL_PREVIEW_LENGTH": "12",
        "RETRIEVAL_PROTOCOL": "grpc-web",
    }
    with edge_function(**env) as url:
        # the caller's bearer credential goes through unchanged (the service verifies it)
        status, answer = ask(url, {"agentId": agent_id, "message": question}, bearer=key)
        assert status == 200, answer
        check_same_hits(answer, want, 12)
        status, answer = ask(url, {"agentId": agent_id, "message": question})
        assert (status, answer["code"]) == (401, "Unauthenticated")
        status, answer = ask(url, {"agentId": agent_id, "message": question}, bearer=new_key())
        assert (status, answer["code"]) == (403, "PermissionDenied")
