"""The container image: built from Debian packages and local wheels, run, queried, restarted.

Slow (a full image build): runs with `make test-all`. Needs root, debootstrap and a running
Docker daemon (Debian's docker.io); without them the test fails, it is not skipped.
The container uses the host's network and binds 127.0.0.1 only, so no traffic leaves loopback.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.client import connect, pb

REPO = Path(__file__).resolve().parent.parent
TAG = "agentopia-retrieval:test"
# The image's budget: the runtime carries no torch (the model is exported at build time).
MAX_IMAGE_BYTES = 1_000_000_000

# A cold image build takes minutes (longer on a loaded machine): above the suite-wide 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_serving(name: str, target: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not json.loads(_docker("inspect", name))[0]["State"]["Running"]:
            logs = subprocess.run(
                ["docker", "logs", name], capture_output=True, text=True, check=False
            )
            raise AssertionError(f"container {name} exited: {logs.stderr[-3000:]}")
        try:
            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as e:
            last = e
        time.sleep(1)
    raise AssertionError(f"container not SERVING on {target} after {timeout_s} s: {last}")


@pytest.fixture(scope="module")
def image() -> str:
    assert shutil.which("docker"), "the docker client is missing (apt-get install docker.io)"
    _docker("info", timeout=30)
    subprocess.run(
        [str(REPO / "scripts" / "build_image.sh"), TAG], cwd=REPO, check=True, timeout=1800
    )
    return TAG


@pytest.fixture
def container(image: str) -> Iterator[tuple[str, str, int]]:
    name = f"retrieval-test-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-data"
    port, http_port = _free_port(), _free_port()
    _docker("volume", "create", volume)
    _docker(
        "run", "-d", "--name", name, "--network", "host",
        "-e", "RETRIEVAL_HOST=127.0.0.1", "-e", f"RETRIEVAL_PORT={port}",
        "-e", f"RETRIEVAL_HTTP_PORT={http_port}",
        "-v", f"{volume}:/data", image,
    )  # fmt: skip
    try:
        yield name, f"127.0.0.1:{port}", http_port
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", volume], capture_output=True, check=False)


def _query(target: str, key: str, datastore_id: str) -> list[tuple[str, float]]:
    client = connect(target, key)
    try:
        response = client.retrieval.Query(
            pb.QueryRequest(datastores=pb.DatastoreIds(ids=[datastore_id]), text="vector search")
        )
        return [(h.external_id, round(h.score, 5)) for h in response.hits]
    finally:
        client.close()


def test_image_is_small_and_has_no_torch(image: str) -> None:
    size = int(_docker("image", "inspect", image, "--format", "{{.Size}}"))
    assert size < MAX_IMAGE_BYTES, f"image is {size / 1e6:.0f} MB"
    probe = "import importlib.util as u; print(u.find_spec('torch') is None)"
    assert _docker("run", "--rm", "--network", "none", image, "python", "-c", probe) == "True"


def test_container_serves_a_query_and_keeps_data_across_restart(
    container: tuple[str, str, int],
) -> None:
    name, target, http_port = container
    _wait_serving(name, target, timeout_s=180)
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=10) as ready:
        assert ready.status == 200  # the HTTP port (Connect, probes) runs in the image too
    key = _docker("exec", name, "cat", "/data/api-key")
    client = connect(target, key)
    try:
        ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="notes"))
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(
                datastore_id=ds.id,
                documents=[
                    pb.DocumentInput(external_id="pg", text="pgvector adds vector search."),
                    pb.DocumentInput(external_id="cat", text="Cats sleep most of the day."),
                ],
            )
        )
    finally:
        client.close()
    before = _query(target, key, ds.id)
    assert before and before[0][0] == "pg"
    # The model was exported at build time: the first start must not export it again.
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
    assert "exporting" not in (logs.stdout + logs.stderr)

    _docker("restart", "--time", "20", name, timeout=120)
    _wait_serving(name, target, timeout_s=180)
    assert _docker("exec", name, "cat", "/data/api-key") == key
    assert _query(target, key, ds.id) == before
    assert json.loads(_docker("inspect", name))[0]["State"]["Running"]
