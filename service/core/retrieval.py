"""Queries: resolve the datastores, embed once per model, search each, merge by score."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from uuid import UUID

from service import metadata_filter, metrics
from service.core import access, query_limits, search_modes
from service.core.lookup_cache import LookupCache
from service.core.validation import check_max_results, check_text, check_threshold, check_vector
from service.embedding.worker import EmbeddingWorker
from service.errors import InvalidArgument, ModelSwitched
from service.models import (
    NO_MODEL,
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
from service.storage.candidates import Candidate
from service.storage.database import Database
from service.storage.filters import Compiled, compile_filter
from service.storage.replicas import ReadPools, parse_token

MAX_QUERY_CHARS = 65_536
FALLBACK_HITS = 3
_DISTINCT_OVERFETCH = 4  # see Retrieval._depth


@dataclass(frozen=True)
class _Plan:
    datastore: Datastore
    max_results: int
    threshold: float
    mode: SearchMode = SearchMode.VECTOR


class Retrieval:
    def __init__(
        self,
        db: Database,
        embeddings: EmbeddingWorker,
        settings: Settings,
        lookups: LookupCache,
        reads: ReadPools | None = None,
    ) -> None:
        self._db = db
        # Searches run on a read replica when one is configured and fresh enough.
        self._reads = reads or ReadPools(db)
        self._embeddings = embeddings
        self._lookups = lookups
        self._settings = settings

    def query(self, principal: Principal, spec: QuerySpec) -> QueryResult:
        # A query alone in flight embeds on this thread (see EmbeddingWorker.query).
        with self._embeddings.query():
            try:
                result = self._query(principal, spec)
            except ModelSwitched:
                # A re-embedding switched a datastore between reading its settings and
                # searching it: once more, with the settings read afresh.
                self._lookups.invalidate()
                result = self._query(principal, spec)
            result = query_limits.fit_response(result, self._settings.max_response_bytes)
            mode = metrics.mode_label(r.mode for r in result.reports if r.mode is not None)
            metrics.observe_query(mode, len(result.hits), any(r.fallback for r in result.reports))
            return result

    def _query(self, principal: Principal, spec: QuerySpec) -> QueryResult:
        self._check_spec(spec)
        where = _compiled_filter(spec)
        datastores, skipped = self._resolve(principal, spec)
        if spec.exact:
            query_limits.check_exact(
                self._db, principal, datastores, self._settings.exact_max_chunks
            )
        result = self._search(spec, where, datastores)
        return QueryResult(result.hits, result.reports + skipped)

    def _search(
        self, spec: QuerySpec, where: Compiled | None, datastores: list[Datastore]
    ) -> QueryResult:
        plans = [_plan(d, spec) for d in datastores]
        clock = metrics.StageClock(metrics.mode_label(p.mode for p in plans))
        vectors = self._query_vectors(
            spec, [p.datastore for p in plans if p.mode is not SearchMode.KEYWORD]
        )
        clock.lap("embed" if spec.vector is None and vectors else None)
        requests = [
            search_modes.DatastoreSearch(
                datastore=plan.datastore,
                mode=plan.mode,
                k=self._depth(plan, spec),
                threshold=plan.threshold,
                exact=spec.exact,
                text=spec.text,
                vector=vectors.get(plan.datastore.id),
                where=where,
                hybrid_candidates=self._settings.hybrid_candidates,
            )
            for plan in plans
        ]
        found_each = self._reads.run(
            lambda db: search_modes.run(db, requests), token=spec.consistency_token
        )
        per_datastore = [
            (plan, self._finish(plan, spec, found))
            for plan, found in zip(plans, found_each, strict=True)
        ]
        clock.lap("database")
        return self._merge(per_datastore, spec, clock)

    def _depth(self, plan: _Plan, spec: QuerySpec) -> int:
        """Candidates to fetch: distinct_documents over-fetches chunks so that
        max_results distinct documents usually remain."""
        if spec.distinct_documents:
            return min(plan.max_results * _DISTINCT_OVERFETCH, self._settings.max_results_cap)
        return plan.max_results

    @staticmethod
    def _finish(plan: _Plan, spec: QuerySpec, found: list[Candidate]) -> list[Candidate]:
        if spec.distinct_documents:
            found = _best_chunk_per_document(found)
        return _cut(found, plan.max_results)

    def _check_spec(self, spec: QuerySpec) -> None:
        parse_token(spec.consistency_token)  # a malformed token: INVALID_ARGUMENT, early
        if spec.max_results is not None:
            check_max_results(spec.max_results, self._settings.max_results_cap)
        if spec.similarity_threshold is not None:
            check_threshold(spec.similarity_threshold)
        if spec.mode in (SearchMode.HYBRID, SearchMode.KEYWORD) and spec.vector is not None:
            raise InvalidArgument(
                f"mode {spec.mode.name} searches query text: send text, not a vector"
            )
        if spec.vector is None:
            if spec.text is None or not spec.text.strip():
                raise InvalidArgument("query text is empty: send text or a vector")
            check_text(spec.text, "text", max_chars=MAX_QUERY_CHARS)

    def _resolve(
        self, principal: Principal, spec: QuerySpec
    ) -> tuple[list[Datastore], list[DatastoreReport]]:
        """The datastores to search, and reports for an agent's links that are not served."""
        if spec.agent_id is not None:
            return self._agent_datastores(principal, spec.agent_id)
        if not spec.datastore_ids:
            raise InvalidArgument("name a target: datastore_ids or agent_id")
        datastores = []
        for datastore_id in dict.fromkeys(spec.datastore_ids):
            datastores.append(
                access.datastore(principal, datastore_id, self._lookups.datastore, served=True)
            )
        return datastores, []

    def _agent_datastores(
        self, principal: Principal, agent_id: UUID
    ) -> tuple[list[Datastore], list[DatastoreReport]]:
        """The agent's links this service serves; the others (Agentopia's pinecone/getzep
        links, and links the isolation rule forbids) are skipped with a reason."""
        found = self._lookups.agent(agent_id)  # the agent and its links, cached together
        agent = access.agent(principal, agent_id, lambda _: found[0] if found else None)
        linked = found[1] if found else ()
        served: list[Datastore] = []
        skipped: list[DatastoreReport] = []
        for datastore_id in linked:
            datastore = self._lookups.datastore(datastore_id)
            if datastore is None:
                continue  # deleted since the links were read
            reason = access.link_refusal(agent, datastore) or access.served_refusal(datastore)
            if reason is None:
                served.append(datastore)
            else:
                skipped.append(DatastoreReport.skipped(datastore_id, reason))
        return served, skipped

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
                by_model[model] = self._embeddings.embed_query(model, spec.text)
            out[d.id] = by_model[model]
        return out

    def _merge(
        self,
        per_datastore: list[tuple[_Plan, list[Candidate]]],
        spec: QuerySpec,
        clock: metrics.StageClock | None = None,
    ) -> QueryResult:
        """Passing hits of every datastore by score; fallback hits only when none passed."""
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
        if len({plan.mode for plan, _ in per_datastore}) > 1:
            # Scores of different modes do not compare: interleave by rank instead.
            ranks = {
                (c.hit.datastore_id, c.hit.chunk_id): rank
                for _, found in per_datastore
                for rank, c in enumerate(found)
            }
            passing.sort(key=lambda h: (ranks[(h.datastore_id, h.chunk_id)], -h.score, h.chunk_id))
        else:
            passing.sort(key=lambda h: (-h.score, h.chunk_id))
        # Each datastore already contributed at most its own max_results; a request
        # override also bounds the merged list. Fallback hits: the best min(3, max_results).
        limit = spec.max_results
        if fallback:
            widest = max((p.max_results for p, _ in per_datastore), default=0)
            limit = min(FALLBACK_HITS, limit if limit is not None else widest)
        hits = passing if limit is None else passing[:limit]
        reports = [
            DatastoreReport(
                datastore_id=plan.datastore.id,
                metric=plan.datastore.metric,
                similarity_threshold=plan.threshold,
                max_results=plan.max_results,
                hit_count=(count := sum(1 for h in hits if h.datastore_id == plan.datastore.id)),
                fallback=fallback and count > 0,
                mode=plan.mode,
            )
            for plan, _ in per_datastore
        ]
        if clock is not None:
            clock.lap("merge")
        return QueryResult(hits, reports)


def _plan(datastore: Datastore, spec: QuerySpec) -> _Plan:
    """The settings applied to one datastore. A query vector implies VECTOR mode;
    keyword mode has no vector score, so no threshold applies to it."""
    mode = spec.mode or (SearchMode.VECTOR if spec.vector is not None else None)
    mode = mode or datastore.config.search_mode
    threshold = (
        spec.similarity_threshold
        if spec.similarity_threshold is not None
        else datastore.similarity_threshold
    )
    return _Plan(
        datastore,
        spec.max_results if spec.max_results is not None else datastore.max_results,
        0.0 if mode is SearchMode.KEYWORD else threshold,
        mode,
    )


def _compiled_filter(spec: QuerySpec) -> Compiled | None:
    tree = metadata_filter.parse(spec.filter)
    return None if tree is None else compile_filter(tree)


def _cut(found: list[Candidate], n: int) -> list[Candidate]:
    """The best n passing candidates; or, when none passes, the best n (fallback pool)."""
    passing = [c for c in found if c.passes][:n]
    return passing if passing else found[:n]


def _flagged(hit: Hit) -> Hit:
    return dataclasses.replace(hit, below_threshold=True)


def _best_chunk_per_document(found: list[Candidate]) -> list[Candidate]:
    seen: set[UUID] = set()
    out = []
    for c in found:  # already best first
        if c.hit.document_id not in seen:
            seen.add(c.hit.document_id)
            out.append(c)
    return out
