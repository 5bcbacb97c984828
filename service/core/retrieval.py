"""Queries: resolve the datastores, embed once per model, search each, merge by score."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from uuid import UUID

from service.core import access
from service.core.validation import check_max_results, check_text, check_threshold, check_vector
from service.embedding.worker import EmbeddingWorker
from service.errors import InvalidArgument, NotFound
from service.models import (
    NO_MODEL,
    SERVED_DATASTORE_TYPE,
    Datastore,
    DatastoreReport,
    Hit,
    Principal,
    QueryResult,
    QuerySpec,
    SearchMode,
    Vector,
)
from service.settings import Settings
from service.storage import agents as agent_rows
from service.storage import datastores as datastore_rows
from service.storage import search
from service.storage.database import Database

MAX_QUERY_CHARS = 65_536
FALLBACK_HITS = 3
# distinct_documents over-fetches chunks so that k distinct documents usually remain.
_DISTINCT_OVERFETCH = 4


@dataclass(frozen=True)
class _Plan:
    datastore: Datastore
    max_results: int
    threshold: float


class Retrieval:
    def __init__(self, db: Database, embeddings: EmbeddingWorker, settings: Settings) -> None:
        self._db = db
        self._embeddings = embeddings
        self._settings = settings

    def query(self, principal: Principal, spec: QuerySpec) -> QueryResult:
        self._check_spec(spec)
        datastores = self._resolve(principal, spec)
        plans = [
            _Plan(
                d,
                spec.max_results if spec.max_results is not None else d.max_results,
                (
                    spec.similarity_threshold
                    if spec.similarity_threshold is not None
                    else d.similarity_threshold
                ),
            )
            for d in datastores
        ]
        vectors = self._query_vectors(spec, datastores)
        per_datastore: list[tuple[_Plan, list[search.Candidate]]] = []
        with self._db.connection() as conn:
            for plan in plans:
                k = plan.max_results
                if spec.distinct_documents:
                    k = min(k * _DISTINCT_OVERFETCH, self._settings.max_results_cap)
                found = search.search(
                    conn,
                    plan.datastore,
                    vectors[plan.datastore.id],
                    k=k,
                    threshold=plan.threshold,
                    exact=spec.exact,
                )
                if spec.distinct_documents:
                    found = _best_chunk_per_document(found)
                per_datastore.append((plan, found[: plan.max_results]))
        return self._merge(per_datastore, spec)

    def _check_spec(self, spec: QuerySpec) -> None:
        if spec.max_results is not None:
            check_max_results(spec.max_results, self._settings.max_results_cap)
        if spec.similarity_threshold is not None:
            check_threshold(spec.similarity_threshold)
        if spec.mode not in (None, SearchMode.VECTOR):
            raise InvalidArgument(f"mode {spec.mode} is not available yet; use VECTOR")
        if spec.vector is None:
            if spec.text is None or not spec.text.strip():
                raise InvalidArgument("query text is empty: send text or a vector")
            check_text(spec.text, "text", max_chars=MAX_QUERY_CHARS)

    def _resolve(self, principal: Principal, spec: QuerySpec) -> list[Datastore]:
        with self._db.connection() as conn:
            if spec.agent_id is not None:
                agent = agent_rows.get(conn, spec.agent_id)
                if agent is None:
                    raise NotFound(f"agent {spec.agent_id} not found")
                access.check_agent(principal, agent)
                ids = [link.datastore_id for link in agent_rows.links(conn, agent.id)]
                # Agentopia's pinecone/getzep links are not ours to serve: skip them.
                return [
                    d
                    for d in _in_order(datastore_rows.get_many(conn, ids), ids)
                    if d.type == SERVED_DATASTORE_TYPE
                ]
            if not spec.datastore_ids:
                raise InvalidArgument("name a target: datastore_ids or agent_id")
            ids = list(dict.fromkeys(spec.datastore_ids))
            found = {d.id: d for d in datastore_rows.get_many(conn, ids)}
        datastores = []
        for datastore_id in ids:
            datastore = found.get(datastore_id)
            if datastore is None:
                raise NotFound(f"datastore {datastore_id} not found")
            access.check_datastore(principal, datastore)
            access.check_served(datastore)
            datastores.append(datastore)
        return datastores

    def _query_vectors(self, spec: QuerySpec, datastores: list[Datastore]) -> dict[UUID, Vector]:
        """The query vector for each datastore: embedded once per distinct model."""
        if spec.vector is not None:
            return {
                d.id: check_vector(spec.vector, d.config.dimensions, d.metric, "vector")
                for d in datastores
            }
        assert spec.text is not None
        by_model: dict[str, Vector] = {}
        out = {}
        for d in datastores:
            model = d.config.embedding_model
            if model == NO_MODEL:
                raise InvalidArgument(
                    f"datastore {d.id} stores caller-supplied vectors (embedding_model 'none'): "
                    "query it with a vector, not text"
                )
            if model not in by_model:
                by_model[model] = self._embeddings.embed(model, [spec.text])[0]
            out[d.id] = by_model[model]
        return out

    def _merge(
        self, per_datastore: list[tuple[_Plan, list[search.Candidate]]], spec: QuerySpec
    ) -> QueryResult:
        """Passing hits from every datastore by score; fallback hits only if none passed anywhere."""
        passing = [c.hit for _, found in per_datastore for c in found if c.passes]
        fallback = False
        if not passing:
            fallback = True
            passing = [
                _flagged(c.hit)
                for plan, found in per_datastore
                if plan.datastore.config.low_confidence_fallback
                for c in found[: min(FALLBACK_HITS, plan.max_results)]
            ]
        passing.sort(key=lambda h: (-h.score, h.chunk_id))
        # Each datastore already contributed at most its own max_results; a request
        # override also bounds the merged list.
        hits = passing if spec.max_results is None else passing[: spec.max_results]
        reports = [
            DatastoreReport(
                datastore_id=plan.datastore.id,
                metric=plan.datastore.metric,
                similarity_threshold=plan.threshold,
                max_results=plan.max_results,
                hit_count=sum(1 for h in hits if h.datastore_id == plan.datastore.id),
                fallback=fallback and plan.datastore.config.low_confidence_fallback,
            )
            for plan, _ in per_datastore
        ]
        return QueryResult(hits, reports)


def _flagged(hit: Hit) -> Hit:
    return dataclasses.replace(hit, below_threshold=True)


def _best_chunk_per_document(found: list[search.Candidate]) -> list[search.Candidate]:
    seen: set[UUID] = set()
    out = []
    for c in found:  # already best first
        if c.hit.document_id not in seen:
            seen.add(c.hit.document_id)
            out.append(c)
    return out


def _in_order(datastores: list[Datastore], ids: list[UUID]) -> list[Datastore]:
    by_id = {d.id: d for d in datastores}
    return [by_id[i] for i in ids if i in by_id]
