"""Re-embedding a datastore with another model, in place, while it serves queries."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2

from service import scoring
from service.app import App
from service.client import Client, pb
from service.core.lookup_cache import LookupCache
from service.core.prepared import content_sha256
from service.core.retrieval import Retrieval
from service.errors import ModelSwitched
from service.models import Datastore, DocumentInput, Principal, Role
from service.query_models import QuerySpec
from service.settings import BUNDLED_MODEL, Settings
from service.storage import datastores as datastore_rows
from service.storage import keyword, partitions, reembed_jobs
from service.storage import reembed as reembed_rows
from tests.helpers.reembed_support import TOPICS, expected_scores, query_text, run_cli, serving
from tests.helpers.rpc import status_of, vector_datastore
from tests.helpers.second_model import SECOND_MODEL_DIMENSIONS, build_second_model

QUERY = "which database does vector search"


SECOND_MODEL = "minilm-dense-256"  # the name datastores choose the second model by


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The second model's folder (built once per module)."""
    return build_second_model(tmp_path_factory.mktemp("models") / SECOND_MODEL)


@pytest.fixture
def configured(settings: Settings, second_model: Path) -> Settings:
    """The tests' settings, offering the second model under its name."""
    return settings.model_copy(update={"models": {SECOND_MODEL: str(second_model)}})


def _create(client: Client) -> pb.Datastore:
    return client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(name="moving", similarity_threshold=0.0, max_results=3)
    )


def _ingest(client: Client, datastore_id: str, docs: dict[str, str]) -> None:
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=datastore_id,
            documents=[pb.DocumentInput(external_id=k, text=v) for k, v in docs.items()],
        )
    )


def _set_model(client: Client, datastore_id: str, model: str, **config: object) -> pb.Datastore:
    paths = ["config.embedding_model", *(f"config.{k}" for k in config)]
    return client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=datastore_id,
                config=pb.DatastoreConfig(embedding_model=model, **config),  # type: ignore[arg-type]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
    )


def _get(client: Client, datastore_id: str) -> pb.Datastore:
    return client.datastores.GetDatastore(pb.GetDatastoreRequest(id=datastore_id))


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class _Querier(threading.Thread):
    """Queries the datastore without pause; records each answer's top scores or error."""

    def __init__(self, client: Client, datastore_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.datastore_id = client, datastore_id
        self.stop = threading.Event()
        self.scores: list[list[float]] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                response = query_text(self.client, self.datastore_id, QUERY)
                self.scores.append([h.score for h in response.hits])
            except BaseException as e:  # every failure counts against the test
                self.errors.append(e)


def _which(scores: list[float], old: list[float], new: list[float]) -> str:
    if np.allclose(scores, old, atol=2e-3):
        return "old"
    if np.allclose(scores, new, atol=2e-3):
        return "new"
    return f"neither: {scores}"


def test_a_datastore_moves_to_another_model_while_queried_and_resumes_after_a_restart(
    configured: Settings, app: App
) -> None:
    docs = {f"doc-{i}": text for i, text in enumerate(TOPICS)}
    with serving(configured, reembed_batch_size=2, reembed_pause_ms=300.0) as first:
        ds = _create(first.client)
        _ingest(first.client, ds.id, docs)
        started = _set_model(first.client, ds.id, SECOND_MODEL)
        # The model changes at the switch, not before; the job shows in the answer.
        assert started.config.embedding_model == BUNDLED_MODEL
        assert started.config.dimensions == 384
        assert (started.reembed.state, started.reembed.target_model) == ("copying", SECOND_MODEL)
        _wait_for(lambda: _get(first.client, ds.id).reembed.chunks_done >= 2, "a first batch")
        # Ingests during the job land in the partition with the old model; the job
        # catches them up before it switches.
        late = {"doc-0": "Espresso crema is the foam on top of a coffee shot.", "late": TOPICS[1]}
        _ingest(first.client, ds.id, late)
        docs.update(late)
        key = first.key
    # Restarted mid-job: the job waits in the database, the datastore is untouched.
    job = app.reembedding.status(uuid.UUID(ds.id))
    assert job is not None and job.state == "copying"
    assert 0 < job.chunks_done < len(docs)

    contents = list(docs.values())
    with serving(configured, key, reembed_batch_size=2, reembed_pause_ms=100.0) as second:
        old = expected_scores(second.app, BUNDLED_MODEL, QUERY, contents, 3)
        new = expected_scores(second.app, SECOND_MODEL, QUERY, contents, 3)
        before = _get(second.client, ds.id)
        assert before.config.embedding_model == BUNDLED_MODEL
        old_settings = second.app.lookups.datastore(uuid.UUID(ds.id))
        assert old_settings is not None
        # A cache that hears no change notifications, holding the settings from before
        # the switch: what a replica that missed the notification has.
        stale = LookupCache(second.app.db, ttl_s=3600.0)
        assert stale.datastore(old_settings.id) == old_settings
        querier = _Querier(second.client, ds.id)
        querier.start()
        try:
            _wait_for(lambda: _get(second.client, ds.id).reembed.state == "done", "the switch")
            time.sleep(0.3)  # a few queries after the switch
        finally:
            querier.stop.set()
            querier.join(timeout=30)
        after = _get(second.client, ds.id)
        assert not querier.errors, [str(e) for e in querier.errors]
        seen = [_which(s, old, new) for s in querier.scores]
        assert set(seen) == {"old", "new"}, seen
        switch = seen.index("new")
        assert seen[switch:] == ["new"] * (len(seen) - switch)  # never back to the old model
        assert after.config.embedding_model == SECOND_MODEL
        assert after.config.dimensions == SECOND_MODEL_DIMENSIONS
        assert (after.document_count, after.chunk_count) == (len(docs), len(docs))
        assert (after.document_count, after.chunk_count) == (
            before.document_count,
            before.chunk_count,
        )
        assert after.reembed.chunks_done == after.reembed.chunks_total == len(docs)
        _assert_every_vector_from(second.app, ds.id, SECOND_MODEL, chunks=len(docs))
        _assert_stale_settings_are_caught(second.app, stale, old_settings, new)
        # Ingesting after the switch embeds with the new model.
        _ingest(second.client, ds.id, {"after": TOPICS[2]})
        _assert_every_vector_from(second.app, ds.id, SECOND_MODEL, chunks=len(docs) + 1)


def _assert_stale_settings_are_caught(
    app: App, stale: LookupCache, old_settings: Datastore, new: list[float]
) -> None:
    """What a replica holding the settings from before the switch does: a query is
    retried with fresh settings; an ingest embedded with the old model is refused."""
    retrieval = Retrieval(app.db, app.embeddings, app.settings, stale)
    owner = Principal(old_settings.user_id, Role.USER)
    result = retrieval.query(owner, QuerySpec(datastore_ids=(old_settings.id,), text=QUERY))
    np.testing.assert_allclose([h.score for h in result.hits], new, atol=2e-3)
    assert stale.loads("datastore") == 2  # the stale settings, then afresh for the retry
    doc = DocumentInput(external_id="stale", text=TOPICS[3])
    prepared = app.ingestion.prepare(doc, old_settings, content_sha256(doc, old_settings))
    app.ingestion.embed([prepared], old_settings)
    with pytest.raises(ModelSwitched):
        app.ingestion.store(old_settings, [prepared])


def _assert_every_vector_from(app: App, datastore_id: str, model: str, *, chunks: int) -> None:
    """The datastore holds ``chunks`` chunks (none left over from replaced documents),
    each with ``model``'s embedding of its content; the HNSW index is built for its
    dimensions; the shadow table is gone."""
    ds = uuid.UUID(datastore_id)
    with app.db.connection() as conn:
        rows = conn.execute(
            "SELECT content, embedding FROM public.datastore_chunks WHERE datastore_id = %s",
            (ds,),
        ).fetchall()
        indexdef = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (partitions.index_name(ds),)
        ).fetchone()
        assert not reembed_rows.shadow_exists(conn, ds)
        locked = conn.execute(
            "SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass",
            (f"public.{partitions.partition_name(ds)}",),
        ).fetchone()
        assert locked == (True,)  # the swapped-in partition is locked down like the old one
    assert len(rows) == chunks
    expected = app.embeddings.registry.get(model).embed([r[0] for r in rows])
    stored = np.stack([np.asarray(r[1], dtype=np.float32) for r in rows])
    assert stored.shape == expected.shape
    np.testing.assert_allclose(stored, expected, atol=1e-5)
    with app.db.connection() as conn:
        datastore = datastore_rows.get(conn, ds)
    assert datastore is not None
    kind = scoring.index_type(expected.shape[1], datastore.config.vector_precision)
    assert indexdef is not None and f"::{kind}({expected.shape[1]})" in indexdef[0]


def test_cancelling_keeps_the_old_state_and_bad_changes_are_refused(configured: Settings) -> None:
    with serving(configured, reembed_batch_size=1, reembed_pause_ms=1000.0) as served:
        client = served.client
        ds = _create(client)
        _ingest(client, ds.id, {f"doc-{i}": t for i, t in enumerate(TOPICS[:4])})
        with served.app.db.connection() as conn:
            stats = keyword.stats(conn, uuid.UUID(ds.id))
        baseline = query_text(client, ds.id, QUERY)
        # Re-chunking needs the documents' text, which is not stored.
        code, msg = status_of(lambda: _set_model(client, ds.id, SECOND_MODEL, chunk_size=64))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "re-chunked" in msg and "text is not" in msg

        assert _set_model(client, ds.id, SECOND_MODEL).reembed.state == "copying"
        assert _set_model(client, ds.id, SECOND_MODEL).reembed.state == "copying"  # same job
        code, msg = status_of(
            lambda: client.datastores.UpdateDatastore(
                pb.UpdateDatastoreRequest(
                    datastore=pb.Datastore(id=ds.id, similarity_metric=pb.DOT),
                    update_mask=field_mask_pb2.FieldMask(paths=["similarity_metric"]),
                )
            )
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "similarity_metric cannot change" in msg
        code, msg = status_of(
            lambda: client.datastores.UpdateDatastore(
                pb.UpdateDatastoreRequest(
                    datastore=pb.Datastore(
                        id=ds.id,
                        config=pb.DatastoreConfig(
                            vector_precision=pb.VECTOR_PRECISION_FLOAT16
                            if _get(client, ds.id).config.vector_precision
                            == pb.VECTOR_PRECISION_FLOAT32
                            else pb.VECTOR_PRECISION_FLOAT32
                        ),
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["config.vector_precision"]),
                )
            )
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "config.vector_precision cannot change" in msg
        # Back to the old model: the job is cancelled, nothing else changes.
        cancelled = _set_model(client, ds.id, BUNDLED_MODEL)
        assert cancelled.reembed.state == "cancelled"
        assert cancelled.config.embedding_model == BUNDLED_MODEL
        served.app.reembedding.wait(uuid.UUID(ds.id), timeout=30)  # the job's thread ends
        got = _get(client, ds.id)
        assert (got.config.embedding_model, got.config.dimensions) == (BUNDLED_MODEL, 384)
        assert got.reembed.state == "cancelled"
        again = query_text(client, ds.id, QUERY)
        assert [(h.chunk_id, round(h.score, 5)) for h in again.hits] == [
            (h.chunk_id, round(h.score, 5)) for h in baseline.hits
        ]
        with served.app.db.connection() as conn:
            datastore_id = uuid.UUID(ds.id)
            assert not reembed_rows.shadow_exists(conn, datastore_id)
            assert keyword.stats(conn, datastore_id) == stats
        # Deleting a datastore mid-job takes the job and its shadow table with it.
        assert _set_model(client, ds.id, SECOND_MODEL).reembed.state == "copying"
        client.datastores.DeleteDatastore(pb.DeleteDatastoreRequest(id=ds.id))
        served.app.reembedding.wait(uuid.UUID(ds.id), timeout=30)  # the job's thread ends
        with served.app.db.connection() as conn:
            assert not reembed_rows.shadow_exists(conn, datastore_id)
            assert reembed_jobs.get_job(conn, datastore_id) is None


def test_caller_vectors_cannot_change_dimensions(client: Client) -> None:
    ds = vector_datastore(client, pb.COSINE, 3)
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds.id,
            documents=[
                pb.DocumentInput(
                    external_id="a", chunks=[pb.ChunkInput(content="x", vector=[1, 0, 0])]
                )
            ],
        )
    )
    code, msg = status_of(
        lambda: client.datastores.UpdateDatastore(
            pb.UpdateDatastoreRequest(
                datastore=pb.Datastore(id=ds.id, config=pb.DatastoreConfig(dimensions=4)),
                update_mask=field_mask_pb2.FieldMask(paths=["config.dimensions"]),
            )
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no model to re-embed them with" in msg
    assert not _get(client, ds.id).HasField("reembed")


def test_reembed_status_and_cancel_from_the_command_line(
    configured: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serving(configured, reembed_batch_size=1, reembed_pause_ms=50.0) as served:
        client = served.client
        ds = _create(client)
        _ingest(client, ds.id, {f"doc-{i}": t for i, t in enumerate(TOPICS[:4])})
        assert run_cli(monkeypatch, configured, "reembed-status", ds.id) == 1  # no job yet
        capsys.readouterr()
        _set_model(client, ds.id, SECOND_MODEL)
        # Follows the job (run by the server's thread) with a progress bar until it ends.
        assert run_cli(monkeypatch, configured, "reembed-status", ds.id) == 0
        out, err = capsys.readouterr()
        assert out.startswith("done: 4/4 chunks")
        assert "chunk" in err  # tqdm's bar
        assert _get(client, ds.id).config.embedding_model == SECOND_MODEL
        assert run_cli(monkeypatch, configured, "reembed-cancel", ds.id) == 1  # nothing runs

        served.app.settings.reembed_pause_ms = 5000.0  # the next job waits between batches
        assert _set_model(client, ds.id, BUNDLED_MODEL).reembed.state == "copying"
        capsys.readouterr()
        assert run_cli(monkeypatch, configured, "reembed-cancel", ds.id) == 0
        assert capsys.readouterr().out.strip() == "cancelled"
        got = _get(client, ds.id)
        assert (got.reembed.state, got.config.embedding_model) == ("cancelled", SECOND_MODEL)
        assert query_text(client, ds.id, QUERY).hits
