"""Ingestion with the real model: chunking, idempotent re-ingest, reads and deletes."""

from __future__ import annotations

from service.app import App
from service.client import Client, pb
from tests.helpers.rows import row_counts
from tests.helpers.rpc import text_datastore

LONG_TEXT = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))


def ingest(client: Client, ds_id: str, *docs: pb.DocumentInput) -> list[pb.DocumentResult]:
    return list(
        client.ingest.IngestDocuments(
            pb.IngestDocumentsRequest(datastore_id=ds_id, documents=list(docs))
        ).results
    )


def chunk_rows(app: App, ds_id: str) -> list[tuple[str, int]]:
    with app.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.external_id, count(c.id) FROM datastore_documents d"
            " LEFT JOIN datastore_chunks c"
            " ON c.document_id = d.id AND c.datastore_id = d.datastore_id"
            " WHERE d.datastore_id = %s GROUP BY d.external_id ORDER BY 1",
            (ds_id,),
        ).fetchall()
    return [(r[0], int(r[1])) for r in rows]


def test_long_text_is_chunked_within_the_model_window(client: Client, app: App) -> None:
    ds = text_datastore(client, chunk_size=64, chunk_overlap=8)
    [result] = ingest(client, ds.id, pb.DocumentInput(external_id="long", text=LONG_TEXT))
    assert result.status == pb.CREATED
    got = client.ingest.GetDocument(
        pb.GetDocumentRequest(datastore_id=ds.id, external_id="long", include_chunks=True)
    )
    chunks = list(got.chunks)
    assert len(chunks) == result.chunk_count > 10
    assert all(c.token_count <= 64 for c in chunks)
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].content.startswith("Sentence number 0")
    assert chunks[-1].content.endswith("topic 3.")
    assert got.document.chunk_count == len(chunks)


def test_reingest_unchanged_changed_and_deleted(client: Client, app: App) -> None:
    ds = text_datastore(client)
    a = pb.DocumentInput(external_id="a", title="A", text="Alpha particles are helium nuclei.")
    b = pb.DocumentInput(external_id="b", title="B", text="Beta decay emits electrons.")
    created = ingest(client, ds.id, a, b)
    assert [r.status for r in created] == [pb.CREATED, pb.CREATED]
    first = {r[0]: r for r in chunk_rows(app, ds.id)}

    # unchanged: same content -> UNCHANGED, no new chunk rows
    with app.db.connection() as conn:
        ids_before = conn.execute(
            "SELECT array_agg(id ORDER BY id) FROM datastore_chunks WHERE datastore_id = %s",
            (ds.id,),
        ).fetchone()
    unchanged = ingest(client, ds.id, a, b)
    assert [r.status for r in unchanged] == [pb.UNCHANGED, pb.UNCHANGED]
    # an unchanged result still names the stored document and its chunks
    assert [(r.document_id, r.chunk_count) for r in unchanged] == [
        (r.document_id, r.chunk_count) for r in created
    ]
    assert all(r.chunk_count == 1 for r in unchanged)
    with app.db.connection() as conn:
        ids_after = conn.execute(
            "SELECT array_agg(id ORDER BY id) FROM datastore_chunks WHERE datastore_id = %s",
            (ds.id,),
        ).fetchone()
    assert ids_before == ids_after

    # changed: new text -> UPDATED, chunks replaced, old content gone from search
    b2 = pb.DocumentInput(external_id="b", title="B", text="Gamma rays are photons.")
    assert [r.status for r in ingest(client, ds.id, b2)] == [pb.UPDATED]
    assert chunk_rows(app, ds.id) == sorted(first.values())
    hits = client.retrieval.Query(
        pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds.id]), text="electrons", max_results=5)
    ).hits
    assert all("Beta" not in h.content for h in hits)
    assert {h.content for h in hits} == {
        "Alpha particles are helium nuclei.",
        "Gamma rays are photons.",
    }

    # deleted: document and its chunks go; unknown ids are reported
    deleted = client.ingest.DeleteDocuments(
        pb.DeleteDocumentsRequest(datastore_id=ds.id, external_ids=["a", "nope"])
    )
    assert deleted.deleted_count == 1
    assert list(deleted.not_found) == ["nope"]
    assert chunk_rows(app, ds.id) == [("b", 1)]
    listed = client.ingest.ListDocuments(pb.ListDocumentsRequest(datastore_id=ds.id))
    assert [d.external_id for d in listed.documents] == ["b"]


def test_metadata_round_trips_and_merges_into_hits(client: Client) -> None:
    ds = text_datastore(client)
    doc = pb.DocumentInput(external_id="m", title="T", source="unit", text="Metadata test text.")
    doc.metadata.update({"lang": "en", "year": 2024})
    ingest(client, ds.id, doc)
    got = client.ingest.GetDocument(pb.GetDocumentRequest(datastore_id=ds.id, external_id="m"))
    assert dict(got.document.metadata) == {"lang": "en", "year": 2024}
    assert got.document.source == "unit"
    [hit] = client.retrieval.Query(
        pb.QueryRequest(datastores=pb.DatastoreIds(ids=[ds.id]), text="metadata")
    ).hits
    assert hit.metadata["lang"] == "en"
    assert hit.title == "T"


def test_documents_page_through_in_external_id_order(client: Client) -> None:
    ds = text_datastore(client)
    ingest(
        client,
        ds.id,
        *[pb.DocumentInput(external_id=f"d{i:02}", text=f"doc {i}") for i in range(7)],
    )
    seen, token = [], ""
    while True:
        page = client.ingest.ListDocuments(
            pb.ListDocumentsRequest(datastore_id=ds.id, page_size=3, page_token=token)
        )
        seen += [d.external_id for d in page.documents]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"d{i:02}" for i in range(7)]


def test_datastore_counts_and_delete_drops_everything(client: Client, app: App) -> None:
    ds = text_datastore(client)
    ingest(client, ds.id, pb.DocumentInput(external_id="x", text="Some text to store."))
    got = client.datastores.GetDatastore(pb.GetDatastoreRequest(id=ds.id))
    assert (got.document_count, got.chunk_count) == (1, 1)
    client.datastores.DeleteDatastore(pb.DeleteDatastoreRequest(id=ds.id))
    assert row_counts(app, ds.id).documents == 0
    with app.db.connection() as conn:
        assert conn.execute(
            "SELECT to_regclass(%s)", (f"public.datastore_chunks_{ds.id.replace('-', '')}",)
        ).fetchone() == (None,)
