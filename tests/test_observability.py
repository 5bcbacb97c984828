"""Prometheus metrics scraped from a real /metrics, access lines with request ids, no secrets."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import cast

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.api.observability import REQUEST_ID_KEY
from service.app import App
from service.client import Client, connect, pb
from service.logs import JsonFormatter
from service.metrics import MetricsServer
from service.models import Role
from tests.helpers.counting_model import CountingModel, make_worker
from tests.helpers.log_guard import LogGuard
from tests.helpers.rpc import ingest_vectors, query_vector, status_of, vector_datastore

RETRIEVAL = "agentopia.retrieval.v1.RetrievalService"
DATASTORES = "agentopia.retrieval.v1.DatastoreService"
INGEST = "agentopia.retrieval.v1.IngestService"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metrics_url() -> Iterator[str]:
    server = MetricsServer("127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.port}/metrics"
    server.stop()


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def delta(before: Samples, after: Samples) -> Callable[..., float]:
    return lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)


def text_doc(external_id: str, text: str) -> pb.DocumentInput:
    return pb.DocumentInput(external_id=external_id, text=text)


def text_query(client: Client, ds_id: str, text: str, **kwargs: object) -> pb.QueryResponse:
    target = pb.DatastoreIds(ids=[ds_id])
    return client.retrieval.Query(pb.QueryRequest(datastores=target, text=text, **kwargs))  # type: ignore[arg-type]


def known_sequence(client: Client, target: str, metrics_url: str) -> tuple[Samples, Samples]:
    """Metrics before and after: 3 + 2 documents ingested, 4 queries answered (2 by
    vector, one with fallback hits; 2 by the same text), 3 calls refused."""
    vectors = vector_datastore(client, dimensions=4, threshold=0.0, max_results=2)
    text_ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="texts"))
    before = scrape(metrics_url)
    ingest_vectors(client, vectors.id, np.eye(4, dtype=np.float32)[:3])  # 3 created
    hits = len(query_vector(client, [vectors.id], [1, 0, 0, 0]).hits)
    fallback = query_vector(client, [vectors.id], [1, 1, 0, 0], similarity_threshold=1.0)
    assert hits == 2 and len(fallback.hits) == 2
    assert all(h.below_threshold for h in fallback.hits)
    stream = [
        pb.StreamIngestRequest(datastore_id=text_ds.id, document=text_doc("a", "Helium nuclei.")),
        pb.StreamIngestRequest(document=text_doc("b", "Electrons in beta decay.")),
    ]
    assert len(list(client.ingest.StreamIngest(iter(stream)))) == 2
    question = f"which particles are helium nuclei {uuid.uuid4().hex}"
    text_query(client, text_ds.id, question)  # embedded: a cache miss
    text_query(client, text_ds.id, question)  # the same text: a cache hit
    with closing(connect(target, None)) as anonymous:
        code, _ = status_of(lambda: query_vector(anonymous, [vectors.id], [1, 0, 0, 0]))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    missing = pb.GetDatastoreRequest(id=str(uuid.uuid4()))
    code, _ = status_of(lambda: client.datastores.GetDatastore(missing))
    assert code == grpc.StatusCode.NOT_FOUND
    bad = pb.CreateDatastoreRequest(name="")
    code, _ = status_of(lambda: client.datastores.CreateDatastore(bad))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    return before, scrape(metrics_url)


def test_metrics_count_a_known_sequence_of_calls(
    client: Client, target: str, metrics_url: str
) -> None:
    before, after = known_sequence(client, target, metrics_url)
    d = delta(before, after)
    query = {"grpc_service": RETRIEVAL, "grpc_method": "Query", "grpc_type": "unary"}
    assert d("grpc_server_started_total", **query) == 5
    assert d("grpc_server_handled_total", **query, grpc_code="OK") == 4
    assert d("grpc_server_handled_total", **query, grpc_code="Unauthenticated") == 1
    assert d("grpc_server_handling_seconds_count", **query) == 5
    assert d("grpc_server_msg_received_total", **query) == 5
    assert d("grpc_server_msg_sent_total", **query) == 4
    get = {"grpc_service": DATASTORES, "grpc_method": "GetDatastore"}
    assert d("grpc_server_handled_total", **get, grpc_code="NotFound") == 1
    create = {"grpc_service": DATASTORES, "grpc_method": "CreateDatastore"}
    assert d("grpc_server_handled_total", **create, grpc_code="InvalidArgument") == 1
    stream_labels = {"grpc_service": INGEST, "grpc_method": "StreamIngest"}
    assert d("grpc_server_handled_total", **stream_labels, grpc_type="bidi_stream") == 1
    assert d("grpc_server_msg_received_total", **stream_labels) == 2
    assert d("grpc_server_msg_sent_total", **stream_labels) == 2
    check_retrieval_metrics(d, after)


def check_retrieval_metrics(d: Callable[..., float], after: Samples) -> None:
    assert d("retrieval_ingest_documents_total", status="created") == 5
    assert d("retrieval_query_stage_seconds_count", stage="database", mode="vector") == 4
    assert d("retrieval_query_stage_seconds_count", stage="merge", mode="vector") == 4
    assert d("retrieval_query_stage_seconds_count", stage="embed", mode="vector") == 2
    assert d("retrieval_query_hits_count", mode="vector") == 4
    assert d("retrieval_query_hits_sum", mode="vector") >= 2 + 2  # the vector queries' hits
    assert d("retrieval_query_fallbacks_total", mode="vector") == 1
    assert d("retrieval_query_cache_misses_total") == 1
    assert d("retrieval_query_cache_hits_total") == 1
    assert d("retrieval_embedded_texts_total", kind="query") == 1
    assert d("retrieval_embedded_texts_total", kind="ingest") >= 2  # one chunk per document
    assert d("retrieval_embedded_tokens_total", kind="query") >= 8  # the words plus [CLS], [SEP]
    assert d("retrieval_embedding_busy_seconds_total") > 0
    assert value(after, "retrieval_embedding_lanes") >= 1
    assert value(after, "retrieval_db_pool_size") >= 1
    assert value(after, "retrieval_db_pool_max") >= value(after, "retrieval_db_pool_size")
    assert value(after, "retrieval_embedding_queue_depth", kind="query") == 0  # all answered


def test_no_label_holds_an_id(client: Client, metrics_url: str) -> None:
    ds = vector_datastore(client, dimensions=2)
    query_vector(client, [ds.id], [1.0, 0.0])
    for (_, labels), _ in scrape(metrics_url).items():
        for _, label_value in labels:
            assert ds.id not in label_value
            with pytest.raises(ValueError):
                uuid.UUID(label_value)


def access_lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "service.access" and getattr(r, "access", {}).get("request_id") == request_id
    ]


def test_access_line_carries_the_request_id_code_and_duration(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    ds = vector_datastore(client, dimensions=2, threshold=0.0)
    ingest_vectors(client, ds.id, np.eye(2, dtype=np.float32))
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    with caplog.at_level(logging.INFO, logger="service.access"):
        reply, call = client.retrieval.Query.with_call(
            pb.QueryRequest(
                datastores=pb.DatastoreIds(ids=[ds.id]), vector=pb.QueryVector(values=[1, 0])
            ),
            metadata=((REQUEST_ID_KEY, request_id),),
        )
    assert (REQUEST_ID_KEY, request_id) in call.trailing_metadata()
    [record] = access_lines(caplog, request_id)
    fields = record.access  # type: ignore[attr-defined]
    assert fields["method"] == f"/{RETRIEVAL}/Query"
    assert fields["code"] == "OK"
    assert 0 < fields["duration_ms"] < 60_000
    assert fields["datastore_ids"] == [ds.id]
    assert fields["hits"] == len(reply.hits) == 2
    assert uuid.UUID(fields["principal"]) and fields["role"] == "user"
    text = record.getMessage()
    assert f"request_id={request_id}" in text and "code=OK" in text and "duration_ms=" in text
    as_json = json.loads(JsonFormatter().format(record))
    assert as_json["request_id"] == request_id and as_json["logger"] == "service.access"


def test_a_failed_call_gets_a_generated_request_id_back(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    missing = pb.GetDatastoreRequest(id=str(uuid.uuid4()))
    unsafe = "x y" * 100  # a space, and far too long: replaced, not echoed
    with (
        caplog.at_level(logging.INFO, logger="service.access"),
        pytest.raises(grpc.RpcError) as info,
    ):
        client.datastores.GetDatastore(missing, metadata=((REQUEST_ID_KEY, unsafe),))
    sent = dict(cast(grpc.Call, info.value).trailing_metadata() or ())
    request_id = sent[REQUEST_ID_KEY]
    assert isinstance(request_id, str) and len(request_id) == 32 and int(request_id, 16) >= 0
    [record] = access_lines(caplog, request_id)
    fields = record.access  # type: ignore[attr-defined]
    assert fields["code"] == "NotFound"
    assert fields["datastore_ids"] == [missing.id]


def test_no_key_token_or_text_reaches_the_logs(
    app: App, target: str, log_guard: LogGuard, caplog: pytest.LogCaptureFixture
) -> None:
    user = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    key = app.identity.create_key(user, Role.USER).key
    wrong_key = key[:-6] + "AAAAAA"
    document = f"Zanzibar quokkas juggle {uuid.uuid4().hex} marmalade"
    question = f"where do quokkas juggle {uuid.uuid4().hex}"
    log_guard.register(key, wrong_key, document, question)
    lines_before = log_guard.lines
    with caplog.at_level(logging.INFO), closing(connect(target, key)) as client:
        ds = client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="secret-ish"))
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(datastore_id=ds.id, documents=[text_doc("q", document)])
        )
        assert text_query(client, ds.id, question).hits
        status_of(lambda: text_query(client, ds.id, question, max_results=100_000))
        status_of(lambda: text_query(client, str(uuid.uuid4()), question))
        with closing(connect(target, wrong_key)) as intruder:
            status_of(lambda: text_query(intruder, ds.id, question))
    assert log_guard.lines - lines_before >= 6  # one access line per call, at least
    written = [log_guard.format(r) for r in caplog.records]
    assert not [line for line in written if log_guard.leaked(line)]
    assert not log_guard.leaks, log_guard.leaks[:3]


def test_the_guard_catches_a_leak() -> None:
    guard = LogGuard()
    guard.register("Zanzibar quokkas")
    logger = logging.getLogger("tests.guard-self-test")
    logger.addHandler(guard)
    logger.propagate = False  # keep these planted lines away from the run's own guard
    try:
        logger.warning("query was %s", "Zanzibar quokkas at dawn")
        logger.warning("authorization: Bearer agr_%s", "x" * 43)
        logger.warning("nothing to see")
    finally:
        logger.removeHandler(guard)
        logger.propagate = True
    assert [what for what, _ in guard.leaks] == [
        "registered secret Zanzib...",
        "an API key",
        "a bearer credential",
    ]
    assert guard.lines == 3


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


def test_embedding_stats_show_the_queue_and_the_busy_lane() -> None:
    model = CountingModel(delay_s=0.2)
    worker = make_worker(model, lanes=1, batch_size=4, query_cache_size=0)
    bulk = threading.Thread(target=worker.embed, args=("m", ["b"] * 12))  # 3 slices of 4
    query = threading.Thread(target=worker.embed_query, args=("m", "q"))
    try:
        bulk.start()
        wait_for(lambda: len(model.batches) == 1)  # the lane runs the first slice
        query.start()
        wait_for(lambda: worker.stats().queued_query_texts == 1)
        busy = worker.stats()
        bulk.join()
        query.join()
        idle = worker.stats()
    finally:
        worker.stop()
    assert (busy.lanes, busy.busy, busy.queued_ingest_texts) == (1, 1, 8)
    assert (idle.busy, idle.queued_query_texts, idle.queued_ingest_texts) == (0, 0, 0)
    assert idle.busy_seconds >= 4 * 0.2 * 0.9  # four runs of 0.2 s on the one lane
