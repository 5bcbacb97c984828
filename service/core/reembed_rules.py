"""What an UpdateDatastore means for re-embedding: start a job, cancel one, or refuse."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from service import config_fields
from service.errors import FailedPrecondition
from service.models import NO_MODEL, Datastore, DatastoreConfig, Metric, ReembedStatus

_MODEL_PATHS = {"config", "config.embedding_model", "config.dimensions"}
_FIXED = tuple(f for f in config_fields.leaves(DatastoreConfig) if f.spec.fixed_while_reembedding)


@dataclass(frozen=True)
class ReembedDecision:
    """``start``: the config whose model a new job moves to. ``keep``: the model and
    dimensions stay as they are until a job switches them. ``cancel``: stop the job."""

    source: DatastoreConfig
    start: DatastoreConfig | None = None
    keep: bool = False
    cancel: bool = False

    def applied(self, config: DatastoreConfig) -> DatastoreConfig:
        """The config written now: the requested one, less a model change still to come."""
        if not self.keep:
            return config
        return dataclasses.replace(
            config,
            embedding_model=self.source.embedding_model,
            dimensions=self.source.dimensions,
        )


def reembed_decision(
    current: Datastore,
    config: DatastoreConfig,
    metric: Metric,
    paths: Sequence[str],
    job: ReembedStatus | None,
) -> ReembedDecision:
    """Raises FailedPrecondition (naming the way forward) for what cannot be done."""
    source = current.config
    wanted = (config.embedding_model, config.dimensions)
    model_changed = wanted != (source.embedding_model, source.dimensions)
    if job is not None and job.running:
        _check_during_job(current, config, metric, job)
        if not model_changed:
            # Naming the current model again while a job runs: back to the old state.
            return ReembedDecision(source, cancel=bool(_MODEL_PATHS & set(paths)))
        if wanted == (job.target_model, job.target_dimensions):
            return ReembedDecision(source, keep=True)  # that job is already under way
        raise FailedPrecondition(
            f"datastore {current.id} is being re-embedded with {job.target_model!r} "
            f"({job.chunks_done}/{job.chunks_total} chunks): cancel that first, by setting "
            f"config.embedding_model back to {source.embedding_model!r} or with "
            "`python -m service reembed-cancel`"
        )
    if not model_changed or current.chunk_count == 0:
        return ReembedDecision(source)
    if config.embedding_model == NO_MODEL:
        if config.dimensions != source.dimensions:
            raise FailedPrecondition(
                f"datastore {current.id} holds {current.chunk_count} chunks: with "
                "embedding_model 'none' their vectors cannot change dimensions, as there is "
                "no model to re-embed them with; create a new datastore or delete its documents"
            )
        return ReembedDecision(source)  # the stored vectors stay; new ones come from callers
    if (config.chunk_size, config.chunk_overlap) != (source.chunk_size, source.chunk_overlap):
        raise FailedPrecondition(
            "re-embedding keeps the stored chunks: chunk contents are stored but document "
            "text is not, so documents cannot be re-chunked (config.chunk_size, "
            "config.chunk_overlap); change the model alone, or re-ingest the documents into "
            "a new datastore to chunk them anew"
        )
    return ReembedDecision(source, start=config, keep=True)


def _check_during_job(
    current: Datastore, config: DatastoreConfig, metric: Metric, job: ReembedStatus
) -> None:
    """While a job runs, settings its shadow table copied or indexes stay fixed: the
    metric and the config fields declared ``fixed_while_reembedding``."""
    source = current.config
    fixed: dict[str, tuple[object, object]] = {"similarity_metric": (metric, current.metric)}
    for f in _FIXED:
        fixed[f.mask] = (config_fields.get(config, f.path), config_fields.get(source, f.path))
    changed = [name for name, (new, old) in fixed.items() if new != old]
    if changed:
        raise FailedPrecondition(
            f"datastore {current.id} is being re-embedded with {job.target_model!r}: "
            f"{', '.join(changed)} cannot change until it is done or cancelled"
        )
