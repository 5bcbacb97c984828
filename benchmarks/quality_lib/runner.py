"""The benchmark's traffic: create a datastore, ingest the corpus, run query passes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from benchmarks.quality_lib.beir import Dataset
from benchmarks.quality_lib.config import METRICS, MODES, RunConfig
from service.client import Client, pb

Log = Callable[[str], None]
QUERY_THREADS = 4
INGEST_IN_FLIGHT = 2  # keeps the server's embedding worker busy while a batch is written


@dataclass(frozen=True)
class ChunkHit:
    doc_id: str  # the corpus id (the document's external_id)
    chunk_index: int
    score: float  # what the server ranks by: vector score, BM25 (keyword) or RRF (hybrid)
    vector_score: float | None = None  # what similarity_threshold applies to, if any


Hits = dict[str, list[ChunkHit]]  # query id -> hits, best first


@dataclass(frozen=True)
class QueryPass:
    name: str
    exact: bool
    max_results: int
    distinct_documents: bool


@dataclass(frozen=True)
class PassResult:
    spec: QueryPass
    hits: Hits
    seconds: float

    @property
    def qps(self) -> float:
        return len(self.hits) / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class IngestStats:
    documents: int
    chunks: int
    seconds: float

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.seconds if self.seconds else 0.0


def create_datastore(client: Client, config: RunConfig) -> pb.Datastore:
    """A datastore for this run: no threshold, no fallback, the run's metric and chunking."""
    hnsw = pb.HnswConfig(ef_search=config.ef_search or 0)
    ds_config = pb.DatastoreConfig(
        chunk_size=config.chunk_size or 0, hnsw=hnsw, low_confidence_fallback=False
    )
    if config.chunk_overlap is not None:
        ds_config.chunk_overlap = config.chunk_overlap
    return client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(
            name=f"quality benchmark: {config.dataset}",
            description="created by benchmarks/quality.py",
            similarity_metric=METRICS[config.metric],
            similarity_threshold=0.0,
            max_results=10,
            config=ds_config,
        )
    )


def document_inputs(dataset: Dataset, config: RunConfig) -> list[pb.DocumentInput]:
    """The corpus as the API takes it.

    Reproduction: one caller-made chunk ``title + " " + text`` per document (MTEB's
    text), which the server embeds whole; the model truncates it at its window.
    Otherwise the server chunks the text itself.
    """
    out = []
    for d in dataset.corpus:
        combined = f"{d.title} {d.text}".strip()
        if not combined:
            continue  # nothing to embed: it can never be retrieved, by any system
        if config.reproduce:
            doc = pb.DocumentInput(
                external_id=d.id, title=d.title, chunks=[pb.ChunkInput(content=combined)]
            )
        elif config.title == "prepend":
            doc = pb.DocumentInput(external_id=d.id, title=d.title, text=combined)
        else:
            doc = pb.DocumentInput(external_id=d.id, title=d.title, text=d.text or d.title)
        out.append(doc)
    return out


def _batches(docs: Sequence[pb.DocumentInput], size: int) -> Iterator[list[pb.DocumentInput]]:
    for start in range(0, len(docs), size):
        yield list(docs[start : start + size])


def ingest(
    client: Client, datastore_id: str, docs: Sequence[pb.DocumentInput], batch: int, log: Log
) -> IngestStats:
    """IngestDocuments in batches, a few in flight; raises if any document fails."""
    started = time.monotonic()
    done = chunks = 0
    last_report = started

    def send(part: list[pb.DocumentInput]) -> pb.IngestDocumentsResponse:
        request = pb.IngestDocumentsRequest(datastore_id=datastore_id, documents=part)
        response: pb.IngestDocumentsResponse = client.ingest.IngestDocuments(request)
        return response

    with ThreadPoolExecutor(INGEST_IN_FLIGHT) as pool:
        for response in pool.map(send, _batches(docs, batch)):
            failed = [r for r in response.results if r.status == pb.FAILED]
            if failed:
                raise RuntimeError(f"ingest failed for {failed[0].external_id}: {failed[0].error}")
            done += len(response.results)
            chunks += sum(r.chunk_count for r in response.results)
            now = time.monotonic()
            if now - last_report >= 15 or done == len(docs):
                last_report = now
                rate = done / (now - started)
                eta = (len(docs) - done) / rate if rate else 0.0
                log(
                    f"  ingested {done}/{len(docs)} documents, {chunks} chunks "
                    f"({rate:.1f} docs/s, ~{eta:.0f}s left)"
                )
    return IngestStats(done, chunks, time.monotonic() - started)


def probe_mode(client: Client, datastore_id: str, mode: str) -> None:
    """One query in ``mode`` before the costly ingest, so a refused mode fails fast."""
    client.retrieval.Query(_request(datastore_id, "probe", mode, QueryPass("probe", True, 1, True)))


def _request(datastore_id: str, text: str, mode: str, spec: QueryPass) -> pb.QueryRequest:
    return pb.QueryRequest(
        datastores=pb.DatastoreIds(ids=[datastore_id]),
        text=text,
        max_results=spec.max_results,
        similarity_threshold=0.0,
        mode=MODES[mode],
        distinct_documents=spec.distinct_documents,
        exact=spec.exact,
    )


def run_pass(
    client: Client,
    datastore_id: str,
    queries: dict[str, str],
    mode: str,
    spec: QueryPass,
    log: Log,
) -> PassResult:
    """Every query through RetrievalService.Query; fallback (below-threshold) hits dropped."""
    started = time.monotonic()

    def one(item: tuple[str, str]) -> tuple[str, list[ChunkHit]]:
        qid, text = item
        response = client.retrieval.Query(_request(datastore_id, text, mode, spec))
        hits = [
            ChunkHit(h.external_id, h.chunk_index, h.score, _vector_score(h, mode))
            for h in response.hits
            if not h.below_threshold
        ]
        return qid, hits

    hits: Hits = {}
    with ThreadPoolExecutor(QUERY_THREADS) as pool:
        for qid, found in pool.map(one, queries.items()):
            hits[qid] = found
    seconds = time.monotonic() - started
    log(
        f"  pass {spec.name}: {len(hits)} queries in {seconds:.1f}s ({len(hits) / seconds:.1f} q/s)"
    )
    return PassResult(spec, hits, seconds)


def _vector_score(hit: pb.Hit, mode: str) -> float | None:
    if hit.HasField("vector_score"):
        return hit.vector_score
    # servers that predate vector_score send the vector score as score (vector mode only)
    return hit.score if mode == "vector" else None


def delete_datastore(client: Client, datastore_id: str) -> None:
    client.datastores.DeleteDatastore(pb.DeleteDatastoreRequest(id=datastore_id))
