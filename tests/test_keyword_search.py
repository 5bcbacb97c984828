"""Keyword search: BM25 against a numpy reference, exact statistics, hostile query text."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterator

import grpc
import numpy as np
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from psycopg import sql

from service.app import App
from service.client import Client, pb
from service.storage import datastores as datastore_rows
from service.storage import keyword, keyword_search
from service.storage.migrations import available_migrations
from tests.helpers.rpc import status_of, vector_datastore

# Words whose English stems are distinct non-stopwords, so a whitespace split is a
# faithful reference tokenizer.
STEMS = {
    "apple": "appl",
    "banana": "banana",
    "cherry": "cherri",
    "grape": "grape",
    "lemon": "lemon",
    "mango": "mango",
    "olive": "oliv",
    "peach": "peach",
    "plum": "plum",
    "melon": "melon",
}
WORDS = list(STEMS)
K1, B = 1.2, 0.75


def corpus(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    # Skewed word frequencies and lengths, so idf and length normalisation both matter.
    p = np.array([0.3, 0.2, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02])
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 30)), p=p)) for _ in range(n)]


def bm25_reference(docs: list[str], query: list[str]) -> list[float]:
    """Okapi BM25 with Lucene's idf, over whitespace tokens."""
    tokens = [d.split() for d in docs]
    n = len(docs)
    avgdl = sum(len(t) for t in tokens) / n
    df = Counter(w for t in tokens for w in set(t))
    out = []
    for t in tokens:
        tf = Counter(t)
        score = 0.0
        for w in set(query):
            if tf[w]:
                idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                score += idf * tf[w] * (K1 + 1) / (tf[w] + K1 * (1 - B + B * len(t) / avgdl))
        out.append(score)
    return out


def text_chunks_datastore(client: Client, docs: dict[str, list[str]]) -> pb.Datastore:
    """A bring-your-own-vectors datastore; keyword search needs no vectors at query time."""
    ds = vector_datastore(client, pb.EUCLIDEAN, 2)
    ingest(client, ds.id, docs)
    return ds


def ingest(client: Client, ds_id: str, docs: dict[str, list[str]]) -> None:
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=ds_id,
            documents=[
                pb.DocumentInput(
                    external_id=ext,
                    chunks=[
                        pb.ChunkInput(content=c, vector=[1.0, float(i)])
                        for i, c in enumerate(chunks)
                    ],
                )
                for ext, chunks in docs.items()
            ],
        )
    )


def keyword_query(client: Client, ds_id: str, text: str, k: int = 1000) -> pb.QueryResponse:
    return client.retrieval.Query(
        pb.QueryRequest(
            datastores=pb.DatastoreIds(ids=[ds_id]), text=text, mode=pb.KEYWORD, max_results=k
        )
    )


def scores_by_content(response: pb.QueryResponse) -> dict[str, float]:
    return {h.external_id: h.score for h in response.hits}


def test_tokenizer_assumption_holds(app: App) -> None:
    with app.db.connection() as conn:
        row = conn.execute(
            "SELECT array_agg(lexeme ORDER BY lexeme) FROM unnest(to_tsvector('english', %s))",
            (" ".join(WORDS),),
        ).fetchone()
    assert row is not None
    assert row[0] == sorted(STEMS.values())


@pytest.mark.parametrize("query", ["apple", "mango plum", "cherry olive melon banana", "melon"])
def test_bm25_matches_the_numpy_reference(client: Client, query: str) -> None:
    docs = corpus(11, 60)
    ds = text_chunks_datastore(client, {f"d{i}": [d] for i, d in enumerate(docs)})
    got = keyword_query(client, ds.id, query)
    expected = bm25_reference(docs, query.split())
    want = {f"d{i}": s for i, s in enumerate(expected) if s > 0}
    assert scores_by_content(got) == pytest.approx(want, rel=1e-9)
    # best first; equal scores by chunk id (here: ingestion order)
    order = sorted(want, key=lambda e: (-want[e], int(e[1:])))
    assert [h.external_id for h in got.hits] == order
    for h in got.hits:
        assert h.keyword_score == h.score
        assert not h.HasField("vector_score")
        assert h.distance == 0.0
    assert got.datastores[0].mode == pb.KEYWORD


def test_keyword_mode_ignores_the_threshold_and_honours_max_results(client: Client) -> None:
    docs = corpus(5, 30)
    ds = text_chunks_datastore(client, {f"d{i}": [d] for i, d in enumerate(docs)})
    got = client.retrieval.Query(
        pb.QueryRequest(
            datastores=pb.DatastoreIds(ids=[ds.id]),
            text="apple",
            mode=pb.KEYWORD,
            max_results=3,
            similarity_threshold=1.0,
        )
    )
    assert len(got.hits) == 3
    assert not any(h.below_threshold for h in got.hits)
    assert got.datastores[0].similarity_threshold == 0.0


def test_terms_are_or_ed_and_stemmed(client: Client) -> None:
    ds = text_chunks_datastore(
        client, {"a": ["running dogs"], "b": ["a dog"], "c": ["cats sleeping"]}
    )
    got = keyword_query(client, ds.id, "the dog runs quickly")
    assert [h.external_id for h in got.hits] == ["a", "b"]
    assert list(keyword_query(client, ds.id, "the and of").hits) == []  # stopwords only
    assert list(keyword_query(client, ds.id, "zebra").hits) == []


def expected_stats(docs: dict[str, list[str]]) -> tuple[int, int, dict[str, int]]:
    chunks = [c for cs in docs.values() for c in cs]
    df = Counter(STEMS[w] for c in chunks for w in set(c.split()))
    return len(chunks), sum(len(c.split()) for c in chunks), dict(df)


def stats(app: App, ds_id: str) -> tuple[int, int, dict[str, int]]:
    with app.db.connection() as conn:
        return keyword.stats(conn, uuid.UUID(ds_id))


def test_statistics_stay_exact_through_update_and_delete(client: Client, app: App) -> None:
    texts = corpus(21, 12)
    docs = {"a": texts[0:3], "b": texts[3:5], "c": texts[5:9], "d": texts[9:12]}
    ds = text_chunks_datastore(client, docs)
    assert stats(app, ds.id) == expected_stats(docs)

    docs["b"] = ["melon melon plum", "apple"]  # update: chunks replaced
    ingest(client, ds.id, {"b": docs["b"]})
    assert stats(app, ds.id) == expected_stats(docs)

    client.ingest.DeleteDocuments(pb.DeleteDocumentsRequest(datastore_id=ds.id, external_ids=["c"]))
    del docs["c"]
    assert stats(app, ds.id) == expected_stats(docs)

    # a datastore built from the final content alone ranks and scores identically
    fresh = text_chunks_datastore(client, docs)
    for query in ("apple", "melon plum", "grape cherry lemon"):
        a, b = keyword_query(client, ds.id, query), keyword_query(client, fresh.id, query)
        assert [(h.external_id, h.chunk_index) for h in a.hits] == [
            (h.external_id, h.chunk_index) for h in b.hits
        ]
        assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits], rel=1e-12)

    client.ingest.DeleteDocuments(
        pb.DeleteDocumentsRequest(datastore_id=ds.id, external_ids=list(docs))
    )
    assert stats(app, ds.id) == (0, 0, {})


def test_concurrent_writers_keep_statistics_exact(client: Client, app: App) -> None:
    """Writers of one datastore queue on its statistics row: no deadlock, nothing lost."""
    from concurrent.futures import ThreadPoolExecutor

    texts = corpus(8, 64)
    ds = text_chunks_datastore(client, {"seed": ["apple"]})
    batches = [
        {f"d{i}": [texts[i], texts[(i + 1) % 64]] for i in range(j, 64, 4)} for j in range(4)
    ]
    # the same documents again with other text: updates racing with inserts
    batches += [{ext: [c.upper() for c in chunks] for ext, chunks in b.items()} for b in batches]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda b: ingest(client, ds.id, b), batches))
    final: dict[str, list[str]] = {"seed": ["apple"]}
    for b in batches[4:]:
        final.update(b)
    got = stats(app, ds.id)
    assert got == expected_stats({k: [c.lower() for c in v] for k, v in final.items()})


def test_deleting_the_datastore_removes_its_statistics(client: Client, app: App) -> None:
    ds = text_chunks_datastore(client, {"a": ["apple plum"]})
    client.datastores.DeleteDatastore(pb.DeleteDatastoreRequest(id=ds.id))
    with app.db.connection() as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM datastore_keyword_terms WHERE datastore_id = %(d)s)"
            " + (SELECT count(*) FROM datastore_keyword_stats WHERE datastore_id = %(d)s)",
            {"d": ds.id},
        ).fetchone()
    assert left == (0,)


def test_keyword_search_uses_the_partitions_gin_index(client: Client, app: App) -> None:
    docs = corpus(3, 400)
    ds = text_chunks_datastore(client, {f"d{i}": [d] for i, d in enumerate(docs)})
    with app.db.connection() as conn:
        conn.execute("SET LOCAL enable_seqscan = off")  # the table is small; ask for the plan
        datastore = datastore_rows.get(conn, uuid.UUID(ds.id))
        assert datastore is not None
        query, params = keyword_search.build_query(datastore, "melon", 10)
        plan = conn.execute(b"EXPLAIN " + query.as_bytes(conn), params).fetchall()
    text = "\n".join(r[0] for r in plan)
    assert f"datastore_chunks_{uuid.UUID(ds.id).hex}_tsv_idx" in text


@pytest.mark.parametrize("lexeme", ["it's", "a\\b", "\\'", "''", "x:*", "a & b", "é'\\"])
def test_any_lexeme_becomes_a_verbatim_tsquery_operand(app: App, lexeme: str) -> None:
    """The parser rarely emits quotes or backslashes; the quoting must hold if it does."""
    with app.db.connection() as conn:
        row = conn.execute(
            "SELECT array_to_tsvector(ARRAY[t.lexeme]) @@ ("
            + keyword_search.OPERAND_SQL
            + ")::tsquery"
            " FROM (SELECT %s::text AS lexeme) t",
            (lexeme,),
        ).fetchone()
    assert row == (True,)


HOSTILE = [
    "'",
    '"',
    "\\",
    "\\'",
    "''",
    "&|!():*",
    "a & b | !c <-> d:* (e)",
    "apple:*",
    "'; DROP TABLE datastore_chunks; --",
    '"apple" -plum OR melon',
    "%s %(q)s {} $1",
    "😀 ünïcödé 漢字",
    " ".join(["apple"] * 12_000),  # 72 KB: too long
    "melon " * 10_000,  # 60 KB of words: a normal query
    "apple\x00plum",
    "",
    "   ",
]


@pytest.fixture(scope="module")
def hostile_target(app: App, target: str) -> Iterator[tuple[Client, str, str]]:
    """One datastore with text and real embeddings, and one with lexemes full of quotes."""
    from service.client import connect
    from service.models import Role

    user = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    client = connect(target, app.identity.create_key(user, Role.USER).key)
    model = client.datastores.CreateDatastore(
        pb.CreateDatastoreRequest(name="model", similarity_threshold=0.0)
    )
    client.ingest.IngestDocuments(
        pb.IngestDocumentsRequest(
            datastore_id=model.id,
            documents=[
                pb.DocumentInput(external_id=f"d{i}", text=t)
                for i, t in enumerate(["apple plum", "it's a\\b x'y \"q\" & | ! ( ) : *", "melon"])
            ],
        )
    )
    odd = vector_datastore(client, pb.EUCLIDEAN, 2)
    odd = client.datastores.UpdateDatastore(
        pb.UpdateDatastoreRequest(
            datastore=pb.Datastore(
                id=odd.id, config=pb.DatastoreConfig(text_search_config="simple")
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["config.text_search_config"]),
        )
    )
    ingest(client, odd.id, {"q": ["o'brien back\\slash it''s a\\'b :* &|!"]})
    yield client, model.id, odd.id
    client.close()


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("mode", [pb.KEYWORD, pb.HYBRID, pb.VECTOR], ids=["kw", "hybrid", "vec"])
def test_hostile_query_text_is_invalid_or_answered(
    hostile_target: tuple[Client, str, str], text: str, mode: int
) -> None:
    client, model_id, odd_id = hostile_target
    targets = [model_id] if mode != pb.KEYWORD else [model_id, odd_id]
    for ds_id in targets:
        request = pb.QueryRequest(
            datastores=pb.DatastoreIds(ids=[ds_id]),
            text=text,
            mode=mode,  # type: ignore[arg-type]
        )
        try:
            client.retrieval.Query(request)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()


def test_lexemes_with_quotes_and_backslashes_are_found(
    hostile_target: tuple[Client, str, str],
) -> None:
    client, _, odd_id = hostile_target
    for text in ("o'brien", "back\\slash", "a\\'b", "it''s"):
        got = keyword_query(client, odd_id, text)
        assert [h.external_id for h in got.hits] == ["q"], text


def test_keyword_mode_needs_text(client: Client) -> None:
    ds = text_chunks_datastore(client, {"a": ["apple"]})
    code, msg = status_of(
        lambda: client.retrieval.Query(
            pb.QueryRequest(
                datastores=pb.DatastoreIds(ids=[ds.id]),
                vector=pb.QueryVector(values=[1.0, 0.0]),
                mode=pb.KEYWORD,
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "send text" in msg


def test_migration_equips_existing_partitions(pg_url: str) -> None:
    """0002 on a database that already holds a datastore: tsvectors, GIN, triggers, stats,
    kept exact by DELETE, UPDATE (through the parent) and TRUNCATE."""
    name = f"mig_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(pg_url, dbname=name)
    try:
        migrations = available_migrations()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(migrations[0].sql.encode())
            ds = conn.execute(
                "INSERT INTO datastores (name) VALUES ('old') RETURNING id"
            ).fetchone()[0]  # type: ignore[index]
            part = f"datastore_chunks_{ds.hex}"
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF datastore_chunks FOR VALUES IN ({})").format(
                    sql.Identifier(part), sql.Literal(str(ds))
                )
            )
            doc = conn.execute(
                "INSERT INTO datastore_documents (datastore_id, external_id, content_sha256)"
                " VALUES (%s, 'x', '') RETURNING id",
                (ds,),
            ).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "INSERT INTO datastore_chunks (datastore_id, document_id, chunk_index, content,"
                " embedding) VALUES (%s, %s, 0, 'apple apple plum', '[1,2]'),"
                " (%s, %s, 1, 'plum', '[1,2]')",
                (ds, doc, ds, doc),
            )
            for m in migrations[1:]:
                conn.execute(m.sql.encode())
            assert keyword.stats(conn, ds) == (2, 4, {"appl": 1, "plum": 2})
            indexes = [
                r[0]
                for r in conn.execute(
                    "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
                    (part,),
                )
            ]
            assert f"{part}_tsv_idx" in indexes
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE chunk_index = 1").format(sql.Identifier(part))
            )
            assert keyword.stats(conn, ds) == (1, 3, {"appl": 1, "plum": 1})
            conn.execute("UPDATE datastore_chunks SET content = 'melon plum plum plum'")
            assert keyword.stats(conn, ds) == (1, 4, {"melon": 1, "plum": 1})
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(part)))
            assert keyword.stats(conn, ds) == (0, 0, {})
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
