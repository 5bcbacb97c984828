"""Re-embedding a datastore in place: a new model's vectors built beside the old ones,
then switched over in one transaction, while queries and ingests go on.

A job (one per datastore, its row in ``datastore_reembed_jobs``) goes through:

- ``copying``: chunk texts are read from the partition in batches by chunk id,
  embedded with the target model (on the embedding worker, behind queries) and
  written with their ids into the shadow table. Then the chunks written or
  replaced since (ingests go on with the old model) are caught up by comparing ids.
- ``indexing``: the shadow's HNSW index is built for the target dimensions.
- ``switching``: one transaction locks the datastore row (ingests wait) and the
  partition against writes, copies the last changed chunks, checks that the shadow
  holds exactly the partition's chunk ids, swaps the tables and writes the config.
  So no chunk keeps an old-model vector after the switch.
- ``done``, or ``failed`` (the old state stays; the error is recorded), or
  ``cancelled`` (UpdateDatastore back to the old model, or ``reembed-cancel``:
  the shadow is dropped, nothing else changes).

The state lives in the database: a job interrupted by a restart resumes when the
service starts again (from the last chunk id copied). A session advisory lock keeps
one process per job.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from uuid import UUID

from service.core.datastore_config import index_build_resources
from service.embedding.worker import EmbeddingWorker
from service.errors import FailedPrecondition, NotFound
from service.models import Datastore, DatastoreConfig, ReembedStatus, Vector
from service.settings import Settings
from service.storage import datastores as datastore_rows
from service.storage import reembed as store
from service.storage import reembed_jobs as jobs
from service.storage.database import Connection, Database

_log = logging.getLogger(__name__)

# Catch-up rounds before the switch: each copies what ingests changed during the
# previous one; the switch then copies the rest with writes blocked.
_CATCH_UP_ROUNDS = 5
_JOIN_TIMEOUT_S = 30.0
# The switch's lock waits (see storage.reembed.bounded_lock_waits) and its tries.
_LOCK_WAIT_MS = 200
_SWITCH_ATTEMPTS = 100


class _Stopped(Exception):
    """The job was cancelled, its datastore deleted, or the service is stopping."""


class Reembedding:
    """Starts, resumes, reports and cancels re-embedding jobs (one thread per job)."""

    def __init__(
        self,
        db: Database,
        embeddings: EmbeddingWorker,
        settings: Settings,
        on_switch: Callable[[], None],
    ) -> None:
        self._db = db
        self._embeddings = embeddings
        self._settings = settings
        self._on_switch = on_switch
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: dict[UUID, threading.Thread] = {}
        self._again: set[UUID] = set()

    # ------------------------------------------------------------ called by Datastores

    def plan(self, conn: Connection, current: Datastore, target: DatastoreConfig) -> ReembedStatus:
        """Record a job moving ``current`` to ``target``'s model, in the caller's
        transaction (which holds the datastore row); ``launch`` it after commit."""
        job = ReembedStatus(
            state="copying",
            chunks_done=0,
            chunks_total=current.chunk_count,
            target_model=target.embedding_model,
            target_dimensions=target.dimensions,
            source_model=current.config.embedding_model,
            source_dimensions=current.config.dimensions,
        )
        jobs.put_job(conn, current.id, job)
        store.create_shadow(conn, current.id)
        return job

    def cancel_in(self, conn: Connection, datastore_id: UUID) -> bool:
        """Cancel the datastore's running job in the caller's transaction (which holds
        the datastore row); False when none runs."""
        job = jobs.get_job(conn, datastore_id, lock=True)
        if job is None or not job.running:
            return False
        jobs.set_state(conn, datastore_id, "cancelled")
        # The shadow may be locked for a while (its HNSW index being built); then the
        # job's thread drops it when it sees the cancel.
        store.try_drop_shadow(conn, datastore_id, _LOCK_WAIT_MS)
        return True

    def cancel(self, datastore_id: UUID) -> bool:
        """Cancel the datastore's running job; the old model and vectors stay."""
        with self._db.connection() as conn:
            if datastore_rows.get(conn, datastore_id, lock=True) is None:
                raise NotFound(f"datastore {datastore_id} not found")
            return self.cancel_in(conn, datastore_id)

    def status(self, datastore_id: UUID) -> ReembedStatus | None:
        with self._db.connection() as conn:
            return jobs.get_job(conn, datastore_id)

    # ------------------------------------------------------------ threads

    def launch(self, datastore_id: UUID) -> None:
        """Run the datastore's job in a background thread, unless one already does."""
        with self._lock:
            if self._stopping.is_set():
                return
            running = self._threads.get(datastore_id)
            if running is not None and running.is_alive():
                # Still winding down (say, a cancelled job): it looks again when it ends.
                self._again.add(datastore_id)
                return
            thread = threading.Thread(
                target=self._run, args=(datastore_id,), name="reembed", daemon=True
            )
            self._threads[datastore_id] = thread
            thread.start()

    def resume_all(self) -> None:
        """Resume every job a restart interrupted (called at start-up)."""
        with self._db.connection() as conn:
            pending = jobs.running_jobs(conn)
            over = jobs.stopped_jobs(conn)
        for datastore_id in over:
            self._drop_stale_shadow(datastore_id)
        for datastore_id in pending:
            _log.info("resuming the re-embedding of datastore %s", datastore_id)
            self.launch(datastore_id)

    def close(self) -> None:
        """Stop every job between two batches; they resume at the next start."""
        self._stopping.set()
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout=_JOIN_TIMEOUT_S)

    def wait(self, datastore_id: UUID, timeout: float) -> None:
        """Wait for this process's thread of the datastore's job (tests, CLI)."""
        with self._lock:
            thread = self._threads.get(datastore_id)
        if thread is not None:
            thread.join(timeout)

    def _run(self, datastore_id: UUID) -> None:
        try:
            with jobs.exclusive(self._db.conninfo, datastore_id) as mine:
                if not mine:
                    _log.info("datastore %s: another process runs its re-embedding", datastore_id)
                    return
                self._work(datastore_id)
        except _Stopped:
            if not self._stopping.is_set():
                self._drop_stale_shadow(datastore_id)
        except Exception as e:
            if self._stopping.is_set():
                return  # interrupted by shutdown: resumes at the next start
            self._fail(datastore_id, e)
        finally:
            with self._lock:
                again = datastore_id in self._again
                self._again.discard(datastore_id)
                self._threads.pop(datastore_id, None)
            if again:
                self.launch(datastore_id)

    def _drop_stale_shadow(self, datastore_id: UUID) -> None:
        """Drop the shadow table of a job that is over (one a cancel could not drop)."""
        with self._db.connection() as conn:
            job = jobs.get_job(conn, datastore_id, lock=True)
            if job is None or not job.running:
                store.drop_shadow(conn, datastore_id)

    def _fail(self, datastore_id: UUID, error: Exception) -> None:
        """Record the failure, unless the job was cancelled or its datastore deleted
        meanwhile (which is what made it fail)."""
        try:
            with self._db.connection() as conn:
                job = jobs.get_job(conn, datastore_id, lock=True)
                if job is not None and job.running:
                    _log.error("re-embedding of datastore %s failed", datastore_id, exc_info=error)
                    jobs.set_state(conn, datastore_id, "failed", f"{type(error).__name__}: {error}")
                    store.drop_shadow(conn, datastore_id)
        except Exception:
            _log.exception("cannot record the failure of datastore %s's job", datastore_id)

    # ------------------------------------------------------------ the job

    def _check(self, datastore_id: UUID, state: str) -> ReembedStatus:
        """The job, if it is still in ``state`` and the service is not stopping."""
        if self._stopping.is_set():
            raise _Stopped
        with self._db.connection() as conn:
            job = jobs.get_job(conn, datastore_id)
        if job is None or job.state != state:
            raise _Stopped
        return job

    def _work(self, datastore_id: UUID) -> None:
        state = self._state(datastore_id)
        if state == "copying":
            job = self._check(datastore_id, "copying")
            self._copy(datastore_id, job)
            self._catch_up(datastore_id, job)
            self._advance(datastore_id, "copying", "indexing")
            state = "indexing"
        if state == "indexing":
            job = self._check(datastore_id, "indexing")
            with self._db.connection() as conn:
                datastore = datastore_rows.get(conn, datastore_id)
                if datastore is None:
                    raise _Stopped
                store.build_index(
                    conn,
                    datastore_id,
                    datastore.metric,
                    job.target_dimensions,
                    datastore.config.hnsw,
                    precision=datastore.config.vector_precision,
                    resources=index_build_resources(self._settings),
                )
            self._advance(datastore_id, "indexing", "switching")
        job = self._check(datastore_id, "switching")
        self._catch_up(datastore_id, job)
        self._switch(datastore_id, job)

    def _advance(self, datastore_id: UUID, current: str, following: str) -> None:
        with self._db.connection() as conn:
            if not jobs.advance(conn, datastore_id, current, following):
                raise _Stopped  # cancelled meanwhile

    def _state(self, datastore_id: UUID) -> str:
        with self._db.connection() as conn:
            job = jobs.get_job(conn, datastore_id)
        return job.state if job is not None else ""

    def _copy(self, datastore_id: UUID, job: ReembedStatus) -> None:
        """The first pass: every chunk by id, from the last one copied (a resume)."""
        with self._db.connection() as conn:
            after = store.last_copied(conn, datastore_id)
            total, done = store.counts(conn, datastore_id)
            jobs.set_progress(conn, datastore_id, done, total)
        size = self._settings.reembed_batch_size
        while True:
            with self._db.connection() as conn:
                batch = store.chunks_after(conn, datastore_id, after, size)
            if not batch:
                return
            done += self._embed_and_write(datastore_id, job, batch)
            after = batch[-1].id
            with self._db.connection() as conn:
                jobs.set_progress(conn, datastore_id, done, max(total, done))
            self._pause()
            self._check(datastore_id, "copying")

    def _catch_up(self, datastore_id: UUID, job: ReembedStatus) -> None:
        """Copy chunks ingested since the first pass saw their ids; drop replaced ones."""
        size = self._settings.reembed_batch_size
        for _ in range(_CATCH_UP_ROUNDS):
            with self._db.connection() as conn:
                store.delete_stale(conn, datastore_id)
                missing = store.missing_chunks(conn, datastore_id, size)
            if not missing:
                break
            self._embed_and_write(datastore_id, job, missing)
            self._check(datastore_id, job.state)
        with self._db.connection() as conn:
            total, done = store.counts(conn, datastore_id)
            jobs.set_progress(conn, datastore_id, done, total)

    def _embed_and_write(
        self,
        datastore_id: UUID,
        job: ReembedStatus,
        chunks: Sequence[store.ChunkText],
        conn: Connection | None = None,
    ) -> int:
        rows = self._embed(job, chunks)
        if conn is not None:
            return store.write_batch(conn, datastore_id, rows)
        with self._db.connection() as own:
            return store.write_batch(own, datastore_id, rows)

    def _embed(
        self, job: ReembedStatus, chunks: Sequence[store.ChunkText]
    ) -> list[tuple[int, Vector, int]]:
        model = self._embeddings.registry.get(job.target_model)
        texts = [c.content for c in chunks]
        vectors = self._embeddings.embed(job.target_model, texts, bulk=True)
        return [
            (c.id, vectors[i], len(model.token_offsets(c.content))) for i, c in enumerate(chunks)
        ]

    def _pause(self) -> None:
        pause = self._settings.reembed_pause_ms / 1000
        if pause > 0 and self._stopping.wait(pause):
            raise _Stopped

    def _switch(self, datastore_id: UUID, job: ReembedStatus) -> None:
        """Swap the shadow in and write the new config, in one transaction; retried
        while its locks are busy (each try blocks queries for at most _LOCK_WAIT_MS)."""
        for attempt in range(_SWITCH_ATTEMPTS):
            try:
                self._switch_once(datastore_id, job)
                break
            except store.LockBusy:
                if self._stopping.wait(min(0.05 * (attempt + 1), 1.0)):
                    raise _Stopped from None
        else:
            raise FailedPrecondition(
                f"the switch found its locks busy {_SWITCH_ATTEMPTS} times; retry the update"
            )
        _log.info("datastore %s switched to model %s", datastore_id, job.target_model)
        self._on_switch()

    def _switch_once(self, datastore_id: UUID, job: ReembedStatus) -> None:
        with self._db.connection() as conn, store.bounded_lock_waits(conn, _LOCK_WAIT_MS):
            current = datastore_rows.get(conn, datastore_id, lock=True)
            locked = jobs.get_job(conn, datastore_id, lock=True)
            if current is None or locked is None or locked.state != "switching":
                raise _Stopped
            store.lock_partition(conn, datastore_id)
            store.delete_stale(conn, datastore_id)
            size = self._settings.reembed_batch_size
            while missing := store.missing_chunks(conn, datastore_id, size):
                # Writes are blocked: each round copies what is missing, until nothing is.
                if not self._embed_and_write(datastore_id, job, missing, conn):
                    raise FailedPrecondition("chunks missing from the shadow could not be copied")
            total, copied = store.counts(conn, datastore_id)
            if copied != total or store.missing_chunks(conn, datastore_id, 1):
                raise FailedPrecondition(
                    f"the shadow holds {copied} chunks, the partition {total}: not switching"
                )
            store.swap(conn, datastore_id)
            config = dataclasses.replace(
                current.config,
                embedding_model=job.target_model,
                dimensions=job.target_dimensions,
            )
            datastore_rows.update(conn, datastore_id, {"config": config.to_json()})
            jobs.set_progress(conn, datastore_id, total, total)
            jobs.set_state(conn, datastore_id, "done")
