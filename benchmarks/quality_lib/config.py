"""What one benchmark run does, as recorded in results.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from service.client import pb

METRICS = {
    "cosine": pb.COSINE,
    "dot": pb.DOT,
    "euclidean": pb.EUCLIDEAN,
    "manhattan": pb.MANHATTAN,
}
MODES = {"vector": pb.VECTOR, "hybrid": pb.HYBRID, "keyword": pb.KEYWORD}
# MTEB ranks the top 1,000 documents per query; also the server's max_results cap.
REPRODUCE_TOP_K = 1000


@dataclass(frozen=True)
class RunConfig:
    """One run's settings. ``None`` chunking / ef_search means the server's default."""

    dataset: str
    reproduce: bool = False
    mode: str = "vector"
    exact: bool = False
    metric: str = "cosine"
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    ef_search: int | None = None
    top_k: int = 100
    title: str = "prepend"  # "prepend": embed title + " " + text; "field": title kept apart
    advisor_depth: int = 100
    objective: str = "f1"
    advise_max_results: int | None = None  # None: the advisor searches its grid
    ingest_batch: int = 64

    @property
    def search(self) -> str:
        return "exact" if self.exact else "hnsw"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["search"] = self.search
        out["chunking"] = (
            "one chunk per document (title + ' ' + text), truncated by the model"
            if self.reproduce
            else "server-side token windows"
        )
        out["document_score"] = "best chunk's score (max over the document's chunks)"
        return out


def reproduction(config: RunConfig) -> RunConfig:
    """The published MTEB setting: one chunk per document, cosine, exact, top 1,000."""
    return replace(
        config,
        reproduce=True,
        exact=True,
        metric="cosine",
        chunk_size=None,
        chunk_overlap=None,
        top_k=REPRODUCE_TOP_K,
        title="prepend",
    )
