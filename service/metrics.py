"""The service's Prometheus metrics, in prometheus_client's default registry.

Core and embedding code report events through the small functions here (they never
touch prometheus_client); state that already lives in an object (the connection pool,
the embedding queue) is read at scrape time by one collector over the sources passed
to ``watch``. Every metric is listed, with its labels, in docs/operations.md. Labels
take a few fixed values only: never a datastore, agent or user id.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Prometheus' default buckets, plus 1 and 2.5 ms: a cached query answers in a few ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --------------------------------------------------------------------- gRPC (any transport)
# Names and labels as go-grpc-prometheus, so existing dashboards and alerts apply.
_RPC = ("grpc_type", "grpc_service", "grpc_method")
GRPC_STARTED = Counter("grpc_server_started", "RPCs started on the server.", _RPC)
GRPC_HANDLED = Counter(
    "grpc_server_handled", "RPCs completed on the server, by status code.", (*_RPC, "grpc_code")
)
GRPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's start to its status, in seconds.",
    _RPC,
    buckets=LATENCY_BUCKETS,
)
GRPC_RECEIVED = Counter("grpc_server_msg_received", "Request messages received.", _RPC)
GRPC_SENT = Counter("grpc_server_msg_sent", "Response messages sent.", _RPC)

# --------------------------------------------------------------------- retrieval
QUERY_STAGE_SECONDS = Histogram(
    "retrieval_query_stage_seconds",
    "Time a query spends in each stage (embed: the query text, database: the searches, "
    "merge: combining datastores' hits).",
    ("stage", "mode"),
    buckets=LATENCY_BUCKETS,
)
QUERY_HITS = Histogram(
    "retrieval_query_hits",
    "Hits returned per query.",
    ("mode",),
    buckets=(0, 1, 2, 3, 5, 10, 20, 50, 100, 1000),
)
QUERY_FALLBACKS = Counter(
    "retrieval_query_fallbacks",
    "Queries answered with below-threshold fallback hits (low_confidence_fallback).",
    ("mode",),
)
QUERY_CACHE_HITS = Counter(
    "retrieval_query_cache_hits", "Query embeddings served from the query cache."
)
QUERY_CACHE_MISSES = Counter(
    "retrieval_query_cache_misses", "Query embeddings not in the query cache (embedded)."
)
EMBEDDED_TEXTS = Counter(
    "retrieval_embedded_texts", "Texts run through an embedding model.", ("kind",)
)
EMBEDDED_TOKENS = Counter(
    "retrieval_embedded_tokens",
    "Model input tokens embedded (special tokens included, after truncation).",
    ("kind",),
)
INGESTED_DOCUMENTS = Counter(
    "retrieval_ingest_documents", "Documents ingested, by result status.", ("status",)
)

# --------------------------------------------------------------------- read replicas
# ``pool`` is "primary" or "replica<i>" (the index in read_database_urls), never a URL.
READ_POOL_IN_USE = Gauge(
    "retrieval_read_pool_in_use",
    "1 when reads without a consistency token go to this pool (a replica that is down or "
    "lags too far is 0; the primary is 1 when no replica is usable).",
    ("pool",),
)
READS_SERVED = Counter(
    "retrieval_reads_served",
    "Reads (queries, GetDocument, ListDocuments) by the pool that answered them.",
    ("pool",),
)
REPLICA_LAG_SECONDS = Gauge(
    "retrieval_replica_lag_seconds",
    "How far a replica's replay trails the primary, measured by LSN at each check "
    "(NaN when it cannot be measured: down, or further behind than the history kept).",
    ("pool",),
)


# ------------------------------------------------------------------ reporting functions


def mode_label(modes: Iterable[str]) -> str:
    """A query's search mode as a label: 'vector', 'hybrid', 'keyword', or 'mixed'."""
    distinct = set(modes)
    return str(distinct.pop()) if len(distinct) == 1 else "mixed" if distinct else "none"


class StageClock:
    """Times a query's stages, one after the other."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._last = time.perf_counter()

    def lap(self, stage: str | None) -> None:
        """Record the time since the last lap as ``stage`` (None: not a stage, skip it)."""
        now = time.perf_counter()
        if stage is not None:
            QUERY_STAGE_SECONDS.labels(stage, self.mode).observe(now - self._last)
        self._last = now


def observe_query(mode: str, hits: int, fallback: bool) -> None:
    QUERY_HITS.labels(mode).observe(hits)
    if fallback:
        QUERY_FALLBACKS.labels(mode).inc()


def count_query_cache(hit: bool) -> None:
    (QUERY_CACHE_HITS if hit else QUERY_CACHE_MISSES).inc()


def count_ingested(statuses: Iterable[str]) -> None:
    for status in statuses:
        INGESTED_DOCUMENTS.labels(status).inc()


def set_read_pools(in_use: dict[str, bool], lags: dict[str, float | None]) -> None:
    """The read pools' state after a replica check (see storage/replicas.py)."""
    for pool, used in in_use.items():
        READ_POOL_IN_USE.labels(pool).set(1 if used else 0)
    for pool, lag in lags.items():
        REPLICA_LAG_SECONDS.labels(pool).set(float("nan") if lag is None else lag)


def count_read(pool: str) -> None:
    READS_SERVED.labels(pool).inc()


_embedding = threading.local()


@contextmanager
def embedding_kind(kind: str) -> Iterator[None]:
    """Attribute the model runs on this thread to ``kind`` ('query' or 'ingest')."""
    before = getattr(_embedding, "kind", None)
    _embedding.kind = kind
    try:
        yield
    finally:
        _embedding.kind = before


def count_embedded(texts: int, tokens: int) -> None:
    """Called by a model backend after a run (kind: what ``embedding_kind`` set)."""
    kind = getattr(_embedding, "kind", None) or "ingest"
    EMBEDDED_TEXTS.labels(kind).inc(texts)
    EMBEDDED_TOKENS.labels(kind).inc(tokens)


# ------------------------------------------------------------------ state read at scrape time


@dataclass(frozen=True)
class EmbeddingStats:
    lanes: int
    busy: int  # model runs in progress
    busy_seconds: float  # model run time so far, summed over lanes
    queued_query_texts: int
    queued_ingest_texts: int


class EmbeddingSource(Protocol):
    def stats(self) -> EmbeddingStats: ...


class PoolSource(Protocol):
    def pool_stats(self) -> dict[str, int]: ...


class _StateCollector(Collector):
    """Reads the watched pools and embedding workers (summed, if a process has several)."""

    def __init__(self) -> None:
        self.pools: weakref.WeakSet[PoolSource] = weakref.WeakSet()
        self.workers: weakref.WeakSet[EmbeddingSource] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        yield from self._pool_metrics([p.pool_stats() for p in list(self.pools)])
        yield from self._embedding_metrics([w.stats() for w in list(self.workers)])

    @staticmethod
    def _pool_metrics(stats: list[dict[str, int]]) -> Iterator[Metric]:
        def total(key: str) -> int:
            return sum(s.get(key, 0) for s in stats)

        for name, key, text in [
            ("size", "pool_size", "Connections open (idle and in use)."),
            ("idle", "pool_available", "Idle connections ready to lend."),
            ("waiting", "requests_waiting", "Requests waiting for a connection."),
            ("max", "pool_max", "Most connections the pool opens."),
        ]:
            yield GaugeMetricFamily(f"retrieval_db_pool_{name}", text, value=total(key))
        yield CounterMetricFamily(
            "retrieval_db_pool_wait_seconds",
            "Time requests spent waiting for a connection.",
            value=total("requests_wait_ms") / 1000,
        )
        yield CounterMetricFamily(
            "retrieval_db_pool_timeouts",
            "Requests that got no connection in time (answered UNAVAILABLE).",
            value=total("requests_errors"),
        )

    @staticmethod
    def _embedding_metrics(stats: list[EmbeddingStats]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "retrieval_embedding_lanes", "Embedding lanes (threads).", sum(s.lanes for s in stats)
        )
        yield GaugeMetricFamily(
            "retrieval_embedding_lanes_busy",
            "Model runs in progress (lanes, plus a lone query run on its own thread).",
            sum(s.busy for s in stats),
        )
        yield CounterMetricFamily(
            "retrieval_embedding_busy_seconds",
            "Model run time summed over lanes; rate() / lanes is the lanes' utilisation.",
            value=sum(s.busy_seconds for s in stats),
        )
        queue = GaugeMetricFamily(
            "retrieval_embedding_queue_depth", "Texts waiting for a lane.", labels=["kind"]
        )
        queue.add_metric(["query"], sum(s.queued_query_texts for s in stats))
        queue.add_metric(["ingest"], sum(s.queued_ingest_texts for s in stats))
        yield queue


_state = _StateCollector()
REGISTRY.register(_state)


def watch(*, pool: PoolSource | None = None, embeddings: EmbeddingSource | None = None) -> None:
    """Report this pool and embedding worker's state at every scrape (until they are freed)."""
    if pool is not None:
        _state.pools.add(pool)
    if embeddings is not None:
        _state.workers.add(embeddings)


def unwatch(*sources: object) -> None:
    for source in sources:
        _state.pools.discard(source)  # type: ignore[arg-type]
        _state.workers.discard(source)  # type: ignore[arg-type]


class MetricsServer:
    """``/metrics`` over plain HTTP on its own port (when no HTTP endpoint serves it)."""

    def __init__(self, host: str, port: int) -> None:
        self._httpd, self._thread = start_http_server(port, addr=host)
        self.port: int = self._httpd.server_port

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
