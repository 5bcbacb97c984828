"""The HTTP port: probes, auth, limits and the Connect error JSON, on a live server."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import prometheus_client
import pytest
from connectrpc.client import ConnectClientSync
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError

from service.api.http import create_http_server
from service.api.http.client import HttpClient
from service.api.http.context import connect_code
from service.api.http.endpoints import method_info
from service.app import App
from service.client import pb

PKG = "agentopia.retrieval.v1"


def post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST; returns (HTTP status, parsed JSON body) whether it succeeded or not."""
    req = urllib.request.Request(url + path, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post_json(url: str, rpc: str, message: dict[str, Any], key: str | None) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return post(url, f"/{PKG}.{rpc}", json.dumps(message).encode(), headers)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["content-type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["content-type"], e.read().decode()


def raw_request(url: str, head: str, body: bytes, read_timeout: float = 10.0) -> str:
    """Send a request by hand (for lying Content-Length or a stalled body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as s:
        s.sendall(head.encode() + b"\r\n\r\n" + body)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunk:
                break
        return b"".join(chunks).decode()


def test_healthz_and_readyz_answer_on_the_http_port(http_url: str) -> None:
    assert get(http_url + "/healthz")[0] == 200
    status, _, body = get(http_url + "/readyz")
    assert (status, body) == (200, "ok\n")


def test_readyz_is_503_while_grpc_health_is_not_serving(
    start_http: Callable[..., str],
) -> None:
    url = start_http(ready=lambda: False)
    assert get(url + "/readyz")[0] == 503
    assert get(url + "/healthz")[0] == 200  # alive, just not ready


def test_metrics_serves_the_prometheus_registry(http_url: str) -> None:
    status, content_type, body = get(http_url + "/metrics")
    assert status == 200
    assert content_type == prometheus_client.CONTENT_TYPE_LATEST
    assert "python_info" in body  # the default registry's own collector


def test_missing_or_bad_key_is_unauthenticated_as_connect_error_json(http_url: str) -> None:
    for key in (None, "agr_not_a_real_key"):
        status, body = post_json(http_url, "DatastoreService/ListDatastores", {}, key)
        assert status == 401
        assert body["code"] == "unauthenticated"
        assert "api key" in body["message"].lower() or "bearer" in body["message"].lower()


def test_errors_are_connect_json_with_grpc_codes(
    http_url: str, new_key: Callable[..., str]
) -> None:
    key = new_key()
    status, body = post_json(http_url, "DatastoreService/GetDatastore", {"id": "nope"}, key)
    assert (status, body["code"]) == (400, "invalid_argument")
    assert "id" in body["message"]
    missing = "00000000-0000-0000-0000-000000000000"
    status, body = post_json(http_url, "DatastoreService/GetDatastore", {"id": missing}, key)
    assert (status, body["code"]) == (404, "not_found")
    assert set(body) == {"code", "message"}


def test_the_request_id_is_a_response_header_on_success_and_failure(
    http_url: str, new_key: Callable[..., str]
) -> None:
    """Over HTTP the request id is a header (over gRPC, trailing metadata:
    tests/test_observability.py), the caller's own when it is a safe token."""
    headers = {"content-type": "application/json", "authorization": f"Bearer {new_key()}"}
    path = f"/{PKG}.DatastoreService/"
    ok = urllib.request.Request(
        http_url + path + "CreateDatastore",
        data=b'{"name": "ids"}',
        headers={**headers, "x-request-id": "job42-doc7"},
    )
    with urllib.request.urlopen(ok, timeout=30) as r:
        assert (r.status, r.headers["x-request-id"]) == (200, "job42-doc7")
    missing = json.dumps({"id": str(uuid.uuid4())}).encode()
    failed = urllib.request.Request(http_url + path + "GetDatastore", data=missing, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(failed, timeout=30)
    with info.value as error:  # closes its connection
        assert (error.code, json.loads(error.read())["code"]) == (404, "not_found")
        generated = error.headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0


def test_permission_denied_for_another_users_datastore(
    http_url: str, new_key: Callable[..., str]
) -> None:
    owner, other = new_key(), new_key()
    _, ds = post_json(http_url, "DatastoreService/CreateDatastore", {"name": "mine"}, owner)
    status, body = post_json(http_url, "DatastoreService/GetDatastore", {"id": ds["id"]}, other)
    assert (status, body["code"]) == (403, "permission_denied")


def test_json_field_names_camel_case_or_proto_names_and_unknown_refused(
    http_url: str, new_key: Callable[..., str]
) -> None:
    key = new_key()
    rpc = "DatastoreService/CreateDatastore"
    for threshold_field in ("similarityThreshold", "similarity_threshold"):
        status, ds = post_json(http_url, rpc, {"name": "n", threshold_field: 0.25}, key)
        assert status == 200
        assert ds["similarityThreshold"] == 0.25  # proto3 JSON answers in lowerCamelCase
    status, body = post_json(http_url, rpc, {"name": "n", "similarity_treshold": 0.2}, key)
    assert (status, body["code"]) == (400, "invalid_argument")
    assert "similarity_treshold" in body["message"]


def test_stream_ingest_is_unimplemented_over_http_with_the_reason(
    http_url: str, new_key: Callable[..., str]
) -> None:
    key = new_key()
    status, body = post_json(http_url, "IngestService/StreamIngest", {}, key)
    assert (status, body["code"]) == (501, "unimplemented")
    assert "IngestDocuments" in body["message"]
    # Connect's streaming framing reaches the endpoint, which answers the same
    stream_ingest = method_info(
        pb.DESCRIPTOR.services_by_name["IngestService"].methods_by_name["StreamIngest"]
    )
    with (
        ConnectClientSync(http_url, codec=google_protobuf_binary_codec()) as client,
        pytest.raises(ConnectError) as info,
    ):
        list(
            client.execute_bidi_stream(
                request=iter([pb.StreamIngestRequest()]),
                method=stream_ingest,
                headers={"authorization": f"Bearer {key}"},
            )
        )
    assert info.value.code == Code.UNIMPLEMENTED
    assert "IngestDocuments" in info.value.message


def test_declared_oversized_body_is_refused_before_reading(http_url: str) -> None:
    head = (
        f"POST /{PKG}.RetrievalService/Query HTTP/1.1\r\nHost: x\r\n"
        "content-type: application/json\r\nContent-Length: 999999999"
    )
    reply = raw_request(http_url, head, b"{")
    assert reply.startswith("HTTP/1.1 429")
    assert '"code":"resource_exhausted"' in reply.replace(" ", "")


def test_body_larger_than_the_message_limit_is_resource_exhausted(
    start_http: Callable[..., str], new_key: Callable[..., str]
) -> None:
    url = start_http(max_message_bytes=2048)
    text = "x" * 5000
    status, body = post_json(url, "RetrievalService/Query", {"text": text}, new_key())
    assert (status, body["code"]) == (429, "resource_exhausted")
    # and gRPC-Web's framing is bounded the same way
    client = HttpClient(url, new_key(), protocol="grpc-web")
    with pytest.raises(ConnectError) as info:
        client.call("RetrievalService", "Query", pb.QueryRequest(text=text))
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    client.close()


def test_the_refusal_of_an_oversized_body_survives_the_body_arriving_late(
    start_http: Callable[..., str], new_key: Callable[..., str]
) -> None:
    """As http.client sends: the headers, then the body. A server that answers after the
    headers and closes gets the body on a closed socket, which TCP answers with a reset
    that destroys the refusal before the client reads it; a body up to 1 MiB is
    therefore read (and dropped) before the refusal is sent."""
    url = start_http(max_message_bytes=2048)
    body = json.dumps({"text": "x" * 50_000}).encode()
    head = (
        f"POST /{PKG}.RetrievalService/Query HTTP/1.1\r\nHost: x\r\n"
        f"authorization: Bearer {new_key()}\r\n"
        f"content-type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode())
        time.sleep(0.3)
        s.sendall(body)
        time.sleep(0.3)
        reply = b""
        while b'"}' not in reply and (chunk := s.recv(65536)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 429")
    assert b'"code":"resource_exhausted"' in reply.replace(b" ", b"")


def test_a_stalled_body_times_out(start_http: Callable[..., str]) -> None:
    url = start_http(http_body_timeout_s=0.5)
    head = (
        f"POST /{PKG}.RetrievalService/Query HTTP/1.1\r\nHost: x\r\n"
        "content-type: application/json\r\nContent-Length: 100"
    )
    reply = raw_request(url, head, b'{"text"')
    assert reply.startswith("HTTP/1.1 504")
    assert "deadline_exceeded" in reply


def test_connect_codes_are_grpc_codes_by_name() -> None:
    import grpc

    for status in grpc.StatusCode:
        if status is not grpc.StatusCode.OK:
            expected = "canceled" if status.name == "CANCELLED" else status.name.lower()
            assert connect_code(status).value == expected


def test_a_busy_http_port_is_an_error_not_a_silent_fallback(app: App) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot bind the HTTP port to 127.0.0.1:{port}"):
            create_http_server(app, "127.0.0.1", port, ready=lambda: True)


def test_both_ports_share_one_bound_on_calls_in_flight(app: App) -> None:
    """Past the gRPC server's bound, an HTTP call is refused at once too (one gate, one
    thread pool for both ports), and both serve again once a slot is free."""
    import grpc

    from service.api.server import create_server
    from service.client import connect
    from service.models import Role

    small = dataclasses.replace(app, settings=app.settings.model_copy(update={"grpc_workers": 1}))
    grpc_server = create_server(small, "127.0.0.1:0")
    http = create_http_server(
        small, "127.0.0.1", 0, ready=grpc_server.serving, runner=grpc_server.runner
    )
    key = app.identity.create_key(app.identity.create_user(f"{uuid.uuid4().hex}@gate"), Role.USER)
    client = connect(f"127.0.0.1:{grpc_server.port}", key.key)
    url = f"http://127.0.0.1:{http.port}"
    try:
        gate = grpc_server.runner.gate
        assert gate.try_enter()  # the one slot is taken, as by a long call
        try:
            status, body = post_json(url, "DatastoreService/ListDatastores", {}, key.key)
            assert (status, body["code"]) == (429, "resource_exhausted")
            with pytest.raises(grpc.RpcError) as refused:
                client.datastores.ListDatastores(pb.ListDatastoresRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            gate.leave()
        status, body = post_json(url, "DatastoreService/ListDatastores", {}, key.key)
        assert status == 200
        client.datastores.ListDatastores(pb.ListDatastoresRequest(), timeout=10)
        assert gate.count == 0
    finally:
        client.close()
        http.stop(grace=0.5)
        grpc_server.stop(grace=0.5)
