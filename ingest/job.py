"""Sending records through StreamIngest, resuming on a fresh stream if the connection drops.

Results come back in the order documents were sent, so the documents sent but
not yet answered form a queue. When the stream fails with UNAVAILABLE (a server
restart, a dropped connection) those are sent again on a new stream before the
rest: ones the server had committed come back UNCHANGED, so nothing is lost and
nothing is stored twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import grpc
from google.protobuf import struct_pb2

from ingest.records import Item, Record, Unreadable
from ingest.report import Tally
from service.client import Client, pb

_log = logging.getLogger(__name__)

STATUS_NAMES = {
    pb.CREATED: "created",
    pb.UPDATED: "updated",
    pb.UNCHANGED: "unchanged",
    pb.FAILED: "failed",
}
RETRYABLE = {grpc.StatusCode.UNAVAILABLE}
# The server's default largest message (RETRIEVAL_MAX_MESSAGE_BYTES): one document per
# message, so a larger one would end the whole stream with RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_MESSAGE_MARGIN = 64 * 1024  # ids, field tags, the datastore id


def _oversize(record: Record) -> str | None:
    """Why ``record`` cannot go in one message, or None if it fits."""
    size = (
        len(record.text.encode())
        + len(record.title.encode())
        + len(record.source.encode())
        + len(json.dumps(record.metadata, default=str).encode())
    )
    if size + _MESSAGE_MARGIN <= MAX_MESSAGE_BYTES:
        return None
    return f"document too large for one message ({size} bytes; at most about {MAX_MESSAGE_BYTES})"


class JobError(Exception):
    """The stream failed for good; what was acknowledged before is stored."""


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    return code, details or ""


def to_request(record: Record, datastore_id: str) -> pb.StreamIngestRequest:
    metadata = struct_pb2.Struct()
    metadata.update(record.metadata)
    return pb.StreamIngestRequest(
        datastore_id=datastore_id,
        document=pb.DocumentInput(
            external_id=record.external_id,
            title=record.title,
            source=record.source,
            text=record.text,
            metadata=metadata,
        ),
    )


class _Feed:
    """The documents of a job, split between those awaiting an answer and those to send."""

    def __init__(
        self, items: Iterable[Item], datastore_id: str, unreadable: Callable[[Unreadable], None]
    ) -> None:
        self._items = iter(items)
        self._items_lock = threading.Lock()
        self._datastore_id = datastore_id
        self._unreadable = unreadable
        self._lock = threading.Lock()
        self._generation = 0
        self._awaiting: deque[Record] = deque()
        self._resend: deque[Record] = deque()

    def requests(self) -> Iterator[pb.StreamIngestRequest]:
        """The requests of one stream; stops early once a newer stream has begun."""
        with self._lock:
            generation = self._generation
        while True:
            with self._lock:
                if generation != self._generation:
                    return
                record = self._resend.popleft() if self._resend else None
                if record is not None:
                    self._awaiting.append(record)
            if record is None:
                record = self._next_item()
                if record is None:
                    return
                with self._lock:
                    if generation != self._generation:
                        self._resend.append(record)  # pulled for a stream that has ended
                        return
                    self._awaiting.append(record)
            yield to_request(record, self._datastore_id)

    def _next_item(self) -> Record | None:
        with self._items_lock:
            for item in self._items:
                if not isinstance(item, Record):
                    self._unreadable(item)
                elif (reason := _oversize(item)) is None:
                    return item
                else:
                    self._unreadable(Unreadable(item.external_id, reason))
        return None

    def acknowledge(self, external_id: str) -> None:
        with self._lock:
            if not self._awaiting or self._awaiting[0].external_id != external_id:
                raise JobError(f"the server answered for {external_id!r} out of order")
            self._awaiting.popleft()

    def restart(self) -> int:
        """Queue the unanswered documents for the next stream; returns how many."""
        with self._lock:
            self._generation += 1
            self._resend = deque([*self._awaiting, *self._resend])
            self._awaiting.clear()
            return len(self._resend)


def run_job(
    client: Client,
    datastore_id: str,
    items: Iterable[Item],
    tally: Tally,
    *,
    retries: int = 8,
    backoff_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Stream ``items`` into the datastore, counting every result in ``tally``.

    Raises JobError when the server ends the stream with an error that a new
    stream cannot fix, or after ``retries`` failed attempts in a row.
    """
    feed = _Feed(items, datastore_id, lambda u: tally.add("failed", u.external_id, u.reason))
    failures_in_a_row = 0
    while True:
        call = client.ingest.StreamIngest(feed.requests())
        try:
            for result in call:
                feed.acknowledge(result.external_id)
                tally.add(
                    STATUS_NAMES.get(result.status, "failed"), result.external_id, result.error
                )
                failures_in_a_row = 0
            if unanswered := feed.restart():
                raise JobError(f"the server ended the stream with {unanswered} unanswered")
            return
        except grpc.RpcError as e:
            code, details = status_of(e)
            if code not in RETRYABLE or failures_in_a_row >= retries:
                raise JobError(f"{code.name}: {details}") from e
            failures_in_a_row += 1
            delay = min(backoff_s * 2 ** (failures_in_a_row - 1), 10.0)
            pending = feed.restart()
            _log.warning(
                "stream interrupted (%s: %s); resuming in %.0f s with %d unanswered documents",
                code.name,
                details,
                delay,
                pending,
            )
            sleep(delay)
        except BaseException:
            call.cancel()
            raise
