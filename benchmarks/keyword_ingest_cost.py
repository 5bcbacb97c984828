"""What the keyword index costs on the write path, measured at the database.

Writes a BEIR corpus (SciFact by default) the way ``storage/documents.py`` does —
per batch of 64 documents: upsert the document rows, DELETE their old chunks, one
binary COPY of the new ones — into (a) a datastore partition with the keyword
machinery (generated tsvector and token count, GIN index, statistics triggers) and
(b) a table shaped like a partition before migration 0002 (same columns, primary
key and HNSW index, nothing else). Vectors are random (384 dims), so embedding
time is excluded: the ratio shown is the worst case; end to end, the model's time
dilutes it. Rounds alternate a/b; medians are reported.

    .venv/bin/python -m benchmarks.keyword_ingest_cost [DATASET_DIR] [--rounds 3]
        [--window WORDS]

``--window`` splits each document into chunks of that many words (default: one
chunk per document, title + " " + text).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from service.models import HnswParams, Metric
from service.storage import keyword, partitions
from service.storage.embedded import EmbeddedPostgres
from service.storage.migrations import migrate

DIMS = 384
BATCH = 64
_PLAIN = (
    "CREATE TABLE {} (id bigint NOT NULL DEFAULT nextval('public.datastore_chunks_id_seq'),"
    " datastore_id uuid NOT NULL, document_id uuid NOT NULL"
    " REFERENCES public.datastore_documents (id) ON DELETE CASCADE,"
    " chunk_index integer NOT NULL, content text NOT NULL,"
    " metadata jsonb NOT NULL DEFAULT '{{}}', embedding vector NOT NULL,"
    " token_count integer NOT NULL DEFAULT 0, PRIMARY KEY (datastore_id, id))"
)


def chunks_of(dataset: Path, window: int | None) -> list[tuple[str, list[str]]]:
    out = []
    for line in (dataset / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        text = f"{doc.get('title', '')} {doc.get('text', '')}".strip()
        if not text:
            continue
        words = text.split()
        pieces = (
            [text]
            if window is None
            else [" ".join(words[i : i + window]) for i in range(0, len(words), window)]
        )
        out.append((str(doc["_id"]), pieces))
    return out


def new_datastore(conn: psycopg.Connection, user: uuid.UUID) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO public.datastores (user_id, name) VALUES (%s, 'ingest cost') RETURNING id",
        (user,),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def load(
    conn: psycopg.Connection,
    ds: uuid.UUID,
    table: sql.Composable,
    docs: list[tuple[str, list[str]]],
    vectors: np.ndarray,
) -> float:
    started = time.perf_counter()
    v = 0
    for start in range(0, len(docs), BATCH):
        part = docs[start : start + BATCH]
        with conn.transaction():
            ids = [
                r[0]
                for r in conn.execute(
                    "INSERT INTO public.datastore_documents (datastore_id, external_id,"
                    " content_sha256) SELECT %s, x, '' FROM unnest(%s::text[]) x RETURNING id",
                    (ds, [d[0] for d in part]),
                ).fetchall()
            ]
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE document_id = ANY(%s)").format(table), (ids,)
            )
            copy = sql.SQL(
                "COPY {} (datastore_id, document_id, chunk_index, content, metadata, embedding,"
                " token_count) FROM STDIN (FORMAT BINARY)"
            ).format(table)
            with conn.cursor() as cur, cur.copy(copy) as cp:
                cp.set_types(["uuid", "uuid", "int4", "text", "jsonb", "vector", "int4"])
                for (_, pieces), doc_id in zip(part, ids, strict=True):
                    for i, piece in enumerate(pieces):
                        cp.write_row(
                            (ds, doc_id, i, piece, Jsonb({}), vectors[v % len(vectors)], 0)
                        )
                        v += 1
    return time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "scifact"
    p.add_argument("dataset", type=Path, nargs="?", default=default)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=int, help="words per chunk (default: whole documents)")
    args = p.parse_args()
    docs = chunks_of(args.dataset, args.window)
    vectors = np.random.default_rng(0).normal(size=(4096, DIMS)).astype(np.float32)
    times: dict[str, list[float]] = {"with keyword index": [], "without": []}
    with tempfile.TemporaryDirectory(prefix="ingest-cost-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pgdata")
        url = pg.start()
        try:
            migrate(url)
            with psycopg.connect(url, autocommit=True) as conn:
                register_vector(conn)
                row = conn.execute("INSERT INTO auth.users DEFAULT VALUES RETURNING id").fetchone()
                assert row is not None
                user = uuid.UUID(str(row[0]))
                for r in range(args.rounds):
                    ds = new_datastore(conn, user)
                    with conn.transaction():
                        partitions.create_partition(
                            conn, ds, Metric.COSINE, DIMS, HnswParams(16, 64, 100)
                        )
                        keyword.install(conn, ds, "english")
                    table = sql.Identifier("public", partitions.partition_name(ds))
                    times["with keyword index"].append(load(conn, ds, table, docs, vectors))
                    ds = new_datastore(conn, user)
                    name = f"plain_{ds.hex}"
                    conn.execute(sql.SQL(_PLAIN).format(sql.Identifier(name)))
                    conn.execute(
                        sql.SQL(
                            "CREATE INDEX ON {} (datastore_id, document_id);"
                            " CREATE INDEX ON {} USING hnsw ((embedding::vector(384))"
                            " vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
                        ).format(sql.Identifier(name), sql.Identifier(name))
                    )
                    times["without"].append(load(conn, ds, sql.Identifier(name), docs, vectors))
                    print(
                        f"round {r + 1}: "
                        + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items())
                    )
        finally:
            pg.stop()
    chunks = sum(len(p) for _, p in docs)
    with_kw, without = (statistics.median(v) for v in times.values())
    print(
        f"{len(docs)} documents, {chunks} chunks: database write time with the keyword index "
        f"{with_kw:.1f}s, without {without:.1f}s (median of {args.rounds}): "
        f"+{with_kw - without:.1f}s, x{with_kw / without:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
