"""Reading a BEIR-format dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

Qrels = dict[str, dict[str, int]]


class DatasetError(ValueError):
    """The folder is not a usable BEIR dataset."""


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Dataset:
    name: str
    corpus: list[Doc]
    queries: dict[str, str]  # judged queries only, in file order
    qrels: Qrels  # query id -> document id -> relevance (> 0 is relevant)


def _jsonl(path: Path) -> list[dict[str, object]]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_qrels(path: Path) -> Qrels:
    """``query-id corpus-id score`` rows (tab-separated, optional header)."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            try:
                score = int(row[2])
            except ValueError as e:
                raise DatasetError(f"{path}: bad relevance {row[2]!r}") from e
            qrels.setdefault(row[0], {})[row[1]] = score
    return qrels


def load(folder: Path, split: str = "test") -> Dataset:
    """The corpus, the queries judged in ``split`` and their judgements."""
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    # a query whose judgements are all non-relevant cannot score: BEIR and MTEB drop it too
    qrels = {q: docs for q, docs in qrels.items() if any(s > 0 for s in docs.values())}
    corpus = [
        Doc(str(d["_id"]), str(d.get("title") or ""), str(d.get("text") or ""))
        for d in _jsonl(folder / "corpus.jsonl")
    ]
    queries = {
        str(q["_id"]): str(q["text"])
        for q in _jsonl(folder / "queries.jsonl")
        if str(q["_id"]) in qrels
    }
    missing = set(qrels) - set(queries)
    if missing:
        raise DatasetError(f"{len(missing)} judged queries are not in queries.jsonl")
    if not corpus or not queries:
        raise DatasetError(f"{folder} has an empty corpus or no judged queries")
    return Dataset(folder.resolve().name, corpus, queries, qrels)
