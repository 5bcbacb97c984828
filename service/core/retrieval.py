"""Queries: resolve the datastores, embed once per model, search each, merge by score."""

from __future__ import annotations

from uuid import UUID

from service import metadata_filter, metrics
from service.core import access, query_plan
from service.core.lookup_cache import LookupCache
from service.core.query_plan import Plan
from service.core.validation import check_max_results, check_text, check_threshold, check_vector
from service.embedding.worker import EmbeddingWorker
from service.errors import InvalidArgument, ModelSwitched, ResourceExhausted
from service.models import NO_MODEL, Datastore, Principal, SearchMode, Vector
from service.query_models import Candidate, DatastoreReport, QueryResult, QuerySpec
from service.settings import Settings
from service.storage import search_plan, sizes
from service.storage.database import Database
from service.storage.filters import Compiled, compile_filter
from service.storage.replicas import ReadPools, parse_token

MAX_QUERY_CHARS = 65_536
_DISTINCT_OVERFETCH = 4  # see Retrieval._depth


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
            result = query_plan.fit_response(result, self._settings.max_response_bytes)
            mode = metrics.mode_label(r.mode for r in result.reports if r.mode is not None)
            metrics.observe_query(mode, len(result.hits), any(r.fallback for r in result.reports))
            return result

    def _query(self, principal: Principal, spec: QuerySpec) -> QueryResult:
        self._check_spec(spec)
        where = _compiled_filter(spec)
        datastores, skipped = self._resolve(principal, spec)
        if spec.exact and not principal.is_service:
            self._check_exact(datastores)
        result = self._search(spec, where, datastores)
        return QueryResult(result.hits, result.reports + skipped)

    def _search(
        self, spec: QuerySpec, where: Compiled | None, datastores: list[Datastore]
    ) -> QueryResult:
        plans = [query_plan.plan(d, spec) for d in datastores]
        clock = metrics.StageClock(metrics.mode_label(p.mode for p in plans))
        vectors = self._query_vectors(
            spec, [p.datastore for p in plans if p.mode is not SearchMode.KEYWORD]
        )
        clock.lap("embed" if spec.vector is None and vectors else None)
        requests = [
            query_plan.DatastoreSearch(
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
        searches = query_plan.searches(requests)
        found = self._reads.run(
            lambda db: search_plan.run(db, searches), token=spec.consistency_token
        )
        found_each = query_plan.fused(requests, found)
        per_datastore = [
            (plan, query_plan.finish(plan, spec, found))
            for plan, found in zip(plans, found_each, strict=True)
        ]
        clock.lap("database")
        return self._merge(per_datastore, spec, clock)

    def _depth(self, plan: Plan, spec: QuerySpec) -> int:
        """Candidates to fetch: distinct_documents over-fetches chunks so that
        max_results distinct documents usually remain."""
        if spec.distinct_documents:
            return min(plan.max_results * _DISTINCT_OVERFETCH, self._settings.max_results_cap)
        return plan.max_results

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

    def _check_exact(self, datastores: list[Datastore]) -> None:
        """Exact search reads every chunk: users may run it on datastores up to
        ``exact_max_chunks`` chunks (service principals on any)."""
        limit = self._settings.exact_max_chunks
        with self._db.autocommit() as conn:
            for datastore in datastores:
                if sizes.chunks_over(conn, datastore.id, limit):
                    raise ResourceExhausted(
                        f"exact search is limited to datastores of at most {limit} chunks for "
                        f"user credentials; datastore {datastore.id} is larger: search it "
                        "approximately (exact = false) or with a service credential"
                    )

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

    @staticmethod
    def _merge(
        per_datastore: list[tuple[Plan, list[Candidate]]],
        spec: QuerySpec,
        clock: metrics.StageClock,
    ) -> QueryResult:
        result = query_plan.merge(per_datastore, spec)
        clock.lap("merge")
        return result


def _compiled_filter(spec: QuerySpec) -> Compiled | None:
    if spec.filter is None:
        return None  # the common query: no filter to parse
    tree = metadata_filter.parse(spec.filter)
    return None if tree is None else compile_filter(tree)
