"""Datastore use cases: create, read, list, update (field mask), delete."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from uuid import UUID

from service.core import access
from service.core.datastore_config import (
    MASK_PATHS,
    ConfigRequest,
    build_config,
    index_build_resources,
    masked_fields,
)
from service.core.lookup_cache import LookupCache
from service.core.reembed_rules import reembed_decision
from service.core.reembedding import Reembedding
from service.core.spare_partitions import SparePartitions
from service.core.validation import (
    MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS,
    check_max_results,
    check_text,
    check_threshold,
)
from service.embedding.registry import ModelRegistry
from service.errors import FailedPrecondition, InvalidArgument
from service.models import (
    KNOWN_DATASTORE_TYPES,
    NO_MODEL,
    SERVED_DATASTORE_TYPE,
    Datastore,
    DatastoreConfig,
    Metric,
    Page,
    Principal,
)
from service.settings import Settings
from service.storage import datastores as rows
from service.storage import keyword, partitions, reembed_jobs
from service.storage import reembed as reembed_rows
from service.storage.database import Database
from service.storage.pagination import page_size

_TOP_LEVEL_PATHS = {
    "name",
    "description",
    "similarity_metric",
    "similarity_threshold",
    "max_results",
}


@dataclass(frozen=True)
class DatastoreFields:
    """Caller-supplied values (create, or update with a mask choosing among them)."""

    name: str = ""
    description: str = ""
    type: str = ""
    metric: Metric | None = None
    similarity_threshold: float | None = None
    max_results: int | None = None
    config: ConfigRequest = field(default_factory=ConfigRequest)


class Datastores:
    def __init__(
        self,
        db: Database,
        models: ModelRegistry,
        settings: Settings,
        lookups: LookupCache,
        reembedding: Reembedding,
        *,
        spares: SparePartitions | None = None,
    ) -> None:
        self._db = db
        self._models = models
        self._settings = settings
        self._lookups = lookups
        self._reembedding = reembedding
        self._spares = spares

    def _check_name(self, name: str) -> str:
        name = check_text(name, "name", max_chars=MAX_NAME_CHARS).strip()
        if not name:
            raise InvalidArgument("name is required")
        return name

    def create(self, principal: Principal, fields: DatastoreFields) -> Datastore:
        name = self._check_name(fields.name)
        kind = fields.type or SERVED_DATASTORE_TYPE
        if kind not in KNOWN_DATASTORE_TYPES:
            raise InvalidArgument(f"type must be one of {', '.join(KNOWN_DATASTORE_TYPES)}")
        if kind != SERVED_DATASTORE_TYPE:
            raise FailedPrecondition(
                f"this service creates and serves only {SERVED_DATASTORE_TYPE!r} datastores, "
                f"not {kind!r}"
            )
        threshold = check_threshold(
            self._settings.default_similarity_threshold
            if fields.similarity_threshold is None
            else fields.similarity_threshold
        )
        max_results = check_max_results(
            fields.max_results
            if fields.max_results is not None
            else self._settings.default_max_results,
            self._settings.max_results_cap,
        )
        config = build_config(fields.config, self._settings, self._models)
        metric = fields.metric or Metric.COSINE
        with self._db.connection() as conn:
            config = _known_text_config(
                config, keyword.resolve_text_config(conn, config.text_search_config)
            )
            # A spare partition's id when one is ready: its partition exists already,
            # so no DDL on the parent table runs in this call (core/spare_partitions.py).
            spare = partitions.claim_spare(conn) if self._spares is not None else None
            datastore = rows.insert(
                conn,
                id=spare,
                user_id=principal.user_id,
                name=name,
                description=check_text(
                    fields.description, "description", max_chars=MAX_DESCRIPTION_CHARS
                ),
                type=kind,
                config=config,
                metric=metric,
                similarity_threshold=threshold,
                max_results=max_results,
            )
            # A spare's partition exists: it only lacks this datastore's index.
            build = partitions.create_partition if spare is None else partitions.create_index
            build(
                conn,
                datastore.id,
                metric,
                config.dimensions,
                config.hnsw,
                precision=config.vector_precision,
            )
            keyword.install(conn, datastore.id, config.text_search_config)
        if self._spares is not None:
            self._spares.wanted()
        return datastore

    def get(self, principal: Principal, datastore_id: UUID, *, counts: bool = True) -> Datastore:
        """The datastore, with its counts and its latest re-embedding job when ``counts``."""
        with self._db.connection() as conn:
            datastore = access.datastore(
                principal, datastore_id, partial(rows.get, conn, counts=counts)
            )
            job = reembed_jobs.get_job(conn, datastore_id) if counts else None
        return dataclasses.replace(datastore, reembed=job)

    def list_page(self, principal: Principal, size: int, token: str) -> Page[Datastore]:
        owner = None if principal.is_service else principal.user_id
        with self._db.connection() as conn:
            return rows.list_page(conn, owner, page_size(size), token)

    def update(
        self, principal: Principal, datastore_id: UUID, fields: DatastoreFields, paths: list[str]
    ) -> Datastore:
        if not paths:
            raise InvalidArgument("update_mask must name at least one field")
        unknown = [p for p in paths if p not in _TOP_LEVEL_PATHS | MASK_PATHS | {"config"}]
        if unknown:
            raise InvalidArgument(f"update_mask has fields that cannot be updated: {unknown}")
        with self._db.connection() as conn:
            current = access.datastore(
                principal,
                datastore_id,
                partial(rows.get, conn, counts=True, lock=True),
                served=True,
            )
            changes = self._top_level_changes(fields, paths)
            config = self._updated_config(current, fields, paths)
            job = reembed_jobs.get_job(conn, datastore_id, lock=True)
            metric = Metric(str(changes.get("similarity_metric", current.metric)))
            decision = reembed_decision(current, config, metric, paths, job)
            if decision.cancel:
                self._reembedding.cancel_in(conn, datastore_id)
            config = decision.applied(config)
            if config.text_search_config != current.config.text_search_config:
                config = _known_text_config(
                    config, keyword.resolve_text_config(conn, config.text_search_config)
                )
            if config != current.config:
                changes["config"] = config.to_json()
            updated = rows.update(conn, datastore_id, changes)
            if (
                metric != current.metric
                or config.dimensions != current.config.dimensions
                or config.hnsw.m != current.config.hnsw.m
                or config.hnsw.ef_construction != current.config.hnsw.ef_construction
                or config.vector_precision != current.config.vector_precision
            ):
                partitions.rebuild_index(
                    conn,
                    datastore_id,
                    metric,
                    config.dimensions,
                    config.hnsw,
                    precision=config.vector_precision,
                    resources=index_build_resources(self._settings),
                )
            if config.text_search_config != current.config.text_search_config:
                keyword.configure(conn, datastore_id, config.text_search_config)
            if decision.start is not None:
                job = self._reembedding.plan(conn, updated, decision.start)
            elif decision.cancel:
                job = reembed_jobs.get_job(conn, datastore_id)
        self._lookups.invalidate()
        if decision.start is not None:
            self._reembedding.launch(datastore_id)
        return dataclasses.replace(updated, reembed=job)

    def _top_level_changes(self, fields: DatastoreFields, paths: list[str]) -> dict[str, object]:
        changes: dict[str, object] = {}
        if "name" in paths:
            changes["name"] = self._check_name(fields.name)
        if "description" in paths:
            changes["description"] = check_text(
                fields.description, "description", max_chars=MAX_DESCRIPTION_CHARS
            )
        if "similarity_metric" in paths:
            changes["similarity_metric"] = (fields.metric or Metric.COSINE).value
        if "similarity_threshold" in paths:
            changes["similarity_threshold"] = check_threshold(fields.similarity_threshold or 0.0)
        if "max_results" in paths:
            changes["max_results"] = check_max_results(
                fields.max_results or 0, self._settings.max_results_cap
            )
        return changes

    def _updated_config(
        self, current: Datastore, fields: DatastoreFields, paths: list[str]
    ) -> DatastoreConfig:
        if not any(p == "config" or p.startswith("config.") for p in paths):
            return current.config
        if "config" in paths:
            request = fields.config
        else:
            chosen = masked_fields(paths)
            request = ConfigRequest.of(current.config).updated(fields.config, chosen)
            if "dimensions" not in chosen and request.get("embedding_model") not in (
                current.config.embedding_model,
                NO_MODEL,
            ):
                # Another model alone: its own dimensions, not the old model's.
                request = request.updated(ConfigRequest(), ["dimensions"])
        return build_config(request, self._settings, self._models)

    def delete(self, principal: Principal, datastore_id: UUID) -> None:
        with self._db.connection() as conn:
            access.datastore(principal, datastore_id, partial(rows.get, conn, lock=True))
            reembed_rows.drop_shadow(conn, datastore_id)
            partitions.drop_partition(conn, datastore_id)
            rows.delete(conn, datastore_id)
        self._lookups.invalidate()


def _known_text_config(config: DatastoreConfig, name: str | None) -> DatastoreConfig:
    """The config with the canonical name of its text search configuration (None: unknown)."""
    if name is None:
        raise InvalidArgument(
            f"config.text_search_config {config.text_search_config!r} is not a text search "
            "configuration of this database (see pg_ts_config)"
        )
    return dataclasses.replace(config, text_search_config=name)
