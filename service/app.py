"""The service's parts, opened at start-up in order and closed in reverse."""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass, field

from service import metrics
from service.core.agents import Agents
from service.core.datastores import Datastores
from service.core.documents import Documents
from service.core.identity import Identity
from service.core.ingestion import Ingestion
from service.core.jwt_auth import TokenVerifier
from service.core.lookup_cache import LookupCache
from service.core.reembedding import Reembedding
from service.core.retrieval import Retrieval
from service.core.spare_partitions import SparePartitions
from service.embedding.registry import ModelRegistry
from service.embedding.worker import EmbeddingWorker, available_cores
from service.settings import Settings
from service.storage.database import Database
from service.storage.embedded import EmbeddedPostgres
from service.storage.migrations import migrate
from service.storage.notifications import ChangeListener
from service.storage.replicas import ReadPools

_log = logging.getLogger(__name__)


def embedded_server(settings: Settings) -> EmbeddedPostgres | None:
    """The embedded PostgreSQL these settings ask for (None: DATABASE_URL names one)."""
    if settings.database_url:
        return None
    return EmbeddedPostgres(settings.pgdata, shared_buffers_mb=settings.embedded_shared_buffers_mb)


def database_url(settings: Settings, embedded: EmbeddedPostgres | None) -> str:
    if settings.database_url:
        return settings.database_url
    assert embedded is not None
    return embedded.start()


@dataclass
class App:
    """Everything a server (or a CLI command) needs, built from one Settings."""

    settings: Settings
    embedded: EmbeddedPostgres | None
    db: Database
    models: ModelRegistry
    embeddings: EmbeddingWorker
    lookups: LookupCache
    listener: ChangeListener
    reads: ReadPools
    identity: Identity
    datastores: Datastores
    agents: Agents
    ingestion: Ingestion
    documents: Documents
    retrieval: Retrieval
    reembedding: Reembedding
    spares: SparePartitions
    # What close() undoes, newest first (filled by open()).
    _resources: ExitStack = field(default_factory=ExitStack, init=False, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, load_models: bool = True, run_jobs: bool = True) -> App:
        """Start the database (embedded unless DATABASE_URL), migrate, open the pool and models;
        ``run_jobs``: resume the re-embedding jobs a restart interrupted.

        Parts close in reverse order on ``close()``; if one fails to open (a model that
        does not load), those already open are closed before the error propagates.
        """
        # Models come from local folders only; never let a library reach for a hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        with ExitStack() as opened:
            embedded = embedded_server(settings)
            if embedded is not None:
                opened.callback(embedded.stop)
            url = database_url(settings, embedded)
            migrate(url)
            db = Database(
                url,
                min_size=settings.pool_min_size,
                max_size=settings.pool_max_size,
                timeout=settings.pool_timeout_s,
                statement_timeout_s=settings.statement_timeout_s,
                probe_interval_s=settings.database_probe_interval_s,
            )
            opened.callback(db.close)
            db.open()
            if embedded is not None:
                embedded.supervise()
            models = ModelRegistry(
                backend=settings.embedding_backend,
                cache_dir=settings.model_dir,
                batch_size=settings.embed_batch_size,
                threads=settings.embedding_threads,
                models=settings.models,
            )
            if load_models:
                for name in settings.preload_models:
                    models.get(name)
            lookups = LookupCache(
                db, ttl_s=settings.lookup_cache_ttl_s, negative_ttl_s=settings.negative_cache_ttl_s
            )
            reads = ReadPools(
                db,
                settings.read_database_urls,
                max_lag_s=settings.max_replica_lag_s,
                check_interval_s=settings.replica_check_interval_s,
                pool_max_size=settings.pool_max_size,
            )
            opened.callback(reads.close)
            reads.start()
            listener = ChangeListener(url, lookups.invalidate)
            opened.callback(listener.stop)
            listener.start()
            embeddings = EmbeddingWorker(
                models,
                lanes=settings.embed_lanes or available_cores(),
                batch_size=settings.embed_batch_size,
                query_batch=settings.embed_query_batch,
                max_wait_s=settings.embed_max_wait_ms / 1000,
                query_cache_size=settings.query_cache_size,
            )
            opened.callback(embeddings.stop)
            embeddings.start()
            metrics.watch(pool=db, embeddings=embeddings)
            opened.callback(metrics.unwatch, db, embeddings)
            reembedding = Reembedding(db, embeddings, settings, lookups.invalidate)
            opened.callback(reembedding.close)
            spares = SparePartitions(db, settings.spare_partitions)
            opened.callback(spares.close)
            app = cls(
                settings=settings,
                embedded=embedded,
                db=db,
                models=models,
                embeddings=embeddings,
                lookups=lookups,
                listener=listener,
                reads=reads,
                identity=Identity(db, lookups, TokenVerifier.from_settings(settings)),
                datastores=Datastores(
                    db,
                    models,
                    settings,
                    lookups,
                    reembedding,
                    spares=spares if spares.enabled else None,
                ),
                agents=Agents(db, lookups),
                ingestion=Ingestion(db, embeddings, settings, reads),
                documents=Documents(db, settings, reads),
                retrieval=Retrieval(db, embeddings, settings, lookups, reads),
                reembedding=reembedding,
                spares=spares,
            )
            if run_jobs:
                reembedding.resume_all()
                spares.start()
            app._resources = opened.pop_all()
        return app

    def close(self) -> None:
        """Close every part, in the reverse order of opening (a second call does nothing)."""
        self._resources.close()
