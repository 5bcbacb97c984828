"""The service survives its database going away, and serves again on its own: an
external PostgreSQL restarted, the embedded one killed with -9. No committed document
is lost, none is partial."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from service.client import pb
from tests.fault_service import (
    DIMS,
    DOCS_PER_BATCH,
    IngestJob,
    Service,
    integrity,
    new_datastore,
    running_service,
    wait_for,
)
from tests.helpers.pg_cluster import PgCluster

BATCHES = 30


def query_call(svc: Service, ds_id: str) -> Callable[[], object]:
    request = pb.QueryRequest(
        datastores=pb.DatastoreIds(ids=[ds_id]), vector=pb.QueryVector(values=[1.0] * DIMS)
    )
    return lambda: svc.client.retrieval.Query(request, timeout=10)


def answers(call: Callable[[], object]) -> bool:
    try:
        call()
    except grpc.RpcError:
        return False
    return True


def outcome(call: Callable[[], object]) -> tuple[grpc.StatusCode, float]:
    """The call's status and how long it took."""
    start = time.monotonic()
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), time.monotonic() - start
    return grpc.StatusCode.OK, time.monotonic() - start


def timed_failure(call: Callable[[], object]) -> tuple[grpc.StatusCode, float]:
    start = time.monotonic()
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), time.monotonic() - start
    raise AssertionError("the call succeeded during the outage")


def test_an_external_database_restart_fails_fast_and_recovers_by_itself(tmp_path: Path) -> None:
    with PgCluster() as cluster, running_service(tmp_path / "data", cluster.url) as svc:
        ds_id = new_datastore(svc)
        query = query_call(svc, ds_id)
        assert answers(query) and svc.serving()
        job = IngestJob(svc.client, ds_id, BATCHES).start()
        assert wait_for(lambda: len(job.outcomes) >= 5, 30) is not None

        cluster.stop("immediate")
        outage = [timed_failure(query) for _ in range(5)]
        assert {code for code, _ in outage} == {grpc.StatusCode.UNAVAILABLE}, outage
        assert max(seconds for _, seconds in outage) < 1.5, outage
        assert wait_for(lambda: not svc.serving(), 3) is not None
        time.sleep(1.0)  # the ingest job meets the outage too

        cluster.start()
        back = wait_for(lambda: answers(query), 10)
        assert back is not None and back < 5, back
        assert wait_for(svc.serving, 3) is not None
        job.join()
        assert grpc.StatusCode.UNAVAILABLE in job.outcomes  # some batches met the outage
        assert set(job.outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
        found = integrity(svc.app, ds_id)
        assert found["partial"] == 0 and found["duplicate"] == 0
        assert found["documents"] % DOCS_PER_BATCH == 0  # whole batches or nothing

        job.rerun()
        assert integrity(svc.app, ds_id) == {
            "documents": BATCHES * DOCS_PER_BATCH,
            "partial": 0,
            "duplicate": 0,
        }


def test_a_killed_embedded_database_is_restarted_and_serves_again(tmp_path: Path) -> None:
    with running_service(tmp_path / "data") as svc:
        embedded = svc.app.embedded
        assert embedded is not None
        ds_id = new_datastore(svc)
        query = query_call(svc, ds_id)
        assert answers(query)
        job = IngestJob(svc.client, ds_id, BATCHES).start()
        assert wait_for(lambda: len(job.outcomes) >= 5, 30) is not None
        pid = embedded.pid
        assert pid is not None

        os.kill(pid, signal.SIGKILL)
        seen: list[tuple[grpc.StatusCode, float]] = []
        start = time.monotonic()
        while time.monotonic() - start < 30:
            seen.append(outcome(query))
            # (the first calls may still meet an old backend: wait for the outage)
            if seen[-1][0] == grpc.StatusCode.OK and len({code for code, _ in seen}) > 1:
                break
            time.sleep(0.1)
        assert seen[-1][0] == grpc.StatusCode.OK, "not serving again within 30 s"
        failures = [(code, seconds) for code, seconds in seen if code != grpc.StatusCode.OK]
        assert failures, "the outage was never seen"
        assert {code for code, _ in failures} == {grpc.StatusCode.UNAVAILABLE}, failures
        assert max(seconds for _, seconds in failures) < 1.5, failures
        assert embedded.pid != pid and embedded.restarts >= 1
        assert wait_for(svc.serving, 3) is not None
        job.join()
        assert set(job.outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
        found = integrity(svc.app, ds_id)
        assert found["partial"] == 0 and found["duplicate"] == 0
        assert found["documents"] % DOCS_PER_BATCH == 0

        job.rerun()
        assert integrity(svc.app, ds_id) == {
            "documents": BATCHES * DOCS_PER_BATCH,
            "partial": 0,
            "duplicate": 0,
        }
