"""benchmarks/quality.py end to end on a tiny BEIR dataset, through the real server.

Real model, real PostgreSQL, real gRPC: the benchmark creates its datastore, ingests,
queries, evaluates with ir-measures, advises a threshold and writes its files.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from benchmarks import quality
from benchmarks.quality_lib import advisor, metrics
from benchmarks.quality_lib.runner import ChunkHit
from service.app import App
from service.client import Client, connect, pb
from service.models import Role

TOPICS = [
    ("volcano", "Volcanic eruptions", "Magma rises through the crust and erupts as lava and ash."),
    ("chess", "Chess openings", "The Sicilian Defence answers 1.e4 with the c-pawn."),
    ("bread", "Baking sourdough bread", "A starter of wild yeast leavens the dough overnight."),
    ("whale", "Humpback whale song", "Male humpbacks sing long, repeating songs in winter."),
    ("tides", "Ocean tides", "The Moon's gravity raises two tidal bulges on Earth."),
    ("vaccine", "How vaccines work", "Vaccines train the immune system to recognise a pathogen."),
    ("bicycle", "Bicycle gears", "Derailleurs move the chain between sprockets to change gear."),
    (
        "coffee",
        "Coffee roasting",
        "Roasting turns green coffee beans brown through Maillard reactions.",
    ),
    ("glacier", "Glacier retreat", "Warming summers melt glaciers faster than snow rebuilds them."),
    (
        "jazz",
        "Jazz improvisation",
        "Soloists improvise melodies over the chord changes of a standard.",
    ),
]
QUERIES = {
    "volcano": "what comes out of an erupting volcano",
    "chess": "how should black respond to king pawn opening",
    "bread": "leavening dough with a natural starter",
    "whale": "why do whales sing",
    "tides": "what causes high and low tide",
    "vaccine": "immunisation and the immune response",
    "bicycle": "changing gears on a bike",
    "coffee": "what happens when coffee beans are roasted",
    "glacier": "why are glaciers shrinking",
    "jazz": "improvising a solo over chord changes",
}


def write_beir(folder: Path) -> Path:
    """30 documents (3 per topic: 2 relevant, 1 off-topic filler) and 10 judged queries."""
    (folder / "qrels").mkdir(parents=True)
    corpus, qrels = [], ["query-id\tcorpus-id\tscore"]
    for i, (key, title, text) in enumerate(TOPICS):
        corpus.append({"_id": f"{key}-a", "title": title, "text": text})
        corpus.append({"_id": f"{key}-b", "title": "", "text": f"More on {title.lower()}. {text}"})
        corpus.append({"_id": f"filler-{i}", "title": f"Note {i}", "text": f"Inventory list {i}."})
        qrels += [f"q-{key}\t{key}-a\t1", f"q-{key}\t{key}-b\t1"]
    qrels.append("q-chess\tfiller-0\t0")  # judged non-relevant: must not count as relevant
    with (folder / "corpus.jsonl").open("w") as f:
        f.writelines(json.dumps(d) + "\n" for d in corpus)
    with (folder / "queries.jsonl").open("w") as f:
        f.writelines(json.dumps({"_id": f"q-{k}", "text": t}) + "\n" for k, t in QUERIES.items())
        f.write(json.dumps({"_id": "unjudged", "text": "not in the qrels"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return folder


@pytest.fixture
def user_key(app: App) -> str:
    user = app.identity.create_user(f"{uuid.uuid4().hex}@test")
    return app.identity.create_key(user, Role.USER).key


@pytest.fixture
def user_client(user_key: str, target: str) -> Client:
    return connect(target, user_key)


def _run(target: str, key: str, *args: str) -> int:
    return quality.main([*args, "--target", target, "--key", key])


def test_reproduction_run_writes_figures_report_and_plots(
    tmp_path: Path, target: str, user_key: str, user_client: Client
) -> None:
    data = write_beir(tmp_path / "tiny")
    out = tmp_path / "out"
    assert _run(target, user_key, str(data), "--out", str(out), "--reproduce") == 0

    results = json.loads((out / "results.json").read_text())
    for name in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map"):
        assert isinstance(results[name], float)
        assert 0.0 <= results[name] <= 1.0
    assert results["ndcg@10"] > 0.8  # ten distinct topics: the model finds them
    assert results["recall@100"] == 1.0
    cfg = results["config"]
    assert (cfg["reproduce"], cfg["exact"], cfg["metric"], cfg["top_k"]) == (
        True,
        True,
        "cosine",
        1000,
    )
    assert results["dataset"] == {
        "name": "tiny",
        "documents": 30,
        "queries": 10,
        "judgements": 21,
    }
    assert results["ingest"]["chunks"] == 30  # one chunk per document
    assert results["hnsw_vs_exact"]["recall@10"] == 1.0  # 30 rows: HNSW is exact here
    assert results["published"] is None  # nothing published for this dataset
    advice = results["advice"]
    assert advice["reachable"]
    assert 0.0 <= advice["similarity_threshold"] <= 1.0
    assert advice["max_results"] in advisor.MAX_RESULTS
    report = (out / "report.md").read_text()
    assert "## Threshold advisor" in report and "UpdateDatastore" in report
    for png in ("metrics.png", "scores.png", "threshold.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the benchmark's datastore is gone afterwards
    listed = user_client.datastores.ListDatastores(pb.ListDatastoresRequest())
    assert list(listed.datastores) == []


def test_chunked_run_applies_advice_to_a_datastore(
    tmp_path: Path, target: str, user_key: str, user_client: Client
) -> None:
    data = write_beir(tmp_path / "tiny")
    out = tmp_path / "out"
    mine = user_client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="mine"))
    args = [str(data), "--out", str(out), "--chunk-size", "16", "--chunk-overlap", "4"]
    assert _run(target, user_key, *args, "--apply", mine.id, "--objective", "recall>=0.8") == 0

    results = json.loads((out / "results.json").read_text())
    assert results["config"]["search"] == "hnsw"
    assert (results["datastore"]["chunk_size"], results["datastore"]["chunk_overlap"]) == (16, 4)
    assert results["ingest"]["chunks"] > 30  # the server split the longer documents
    advice = results["advice"]
    assert advice["objective"] == "recall>=0.8"
    assert advice["at_advice"]["recall"] >= 0.8
    updated = user_client.datastores.GetDatastore(pb.GetDatastoreRequest(id=mine.id))
    assert updated.similarity_threshold == pytest.approx(advice["similarity_threshold"])
    assert updated.max_results == advice["max_results"]

    # a saved advice applies on its own, as the report's command line does
    other = user_client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name="other"))
    saved = str(out / "results.json")
    assert _run(target, user_key, "--from-results", saved, "--apply", other.id) == 0
    again = user_client.datastores.GetDatastore(pb.GetDatastoreRequest(id=other.id))
    assert again.max_results == advice["max_results"]


def test_refused_settings_fail_before_ingesting(
    tmp_path: Path,
    target: str,
    user_key: str,
    user_client: Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = write_beir(tmp_path / "tiny")
    code = _run(target, user_key, str(data), "--out", str(tmp_path / "o"), "--chunk-size", "4")
    assert code == 2
    err = capsys.readouterr().err
    assert "the server refuses this run" in err and "chunk_size" in err
    assert not (tmp_path / "o" / "results.json").exists()
    assert list(user_client.datastores.ListDatastores(pb.ListDatastoresRequest()).datastores) == []


def test_missing_dataset_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="qrels"):
        quality.main([str(tmp_path), "--out", str(tmp_path / "o")])


# ---------------------------------------------------------------- pure parts


def _hits(pairs: list[tuple[str, float]]) -> list[ChunkHit]:
    return [ChunkHit(doc, i, score, score) for i, (doc, score) in enumerate(pairs)]


def test_document_run_scores_a_document_by_its_best_chunk() -> None:
    run = metrics.document_run({"q": _hits([("a", 0.9), ("b", 0.8), ("a", 0.7), ("c", 0.1)])}, 2)
    assert run == {"q": {"a": 0.9, "b": 0.8}}


def test_metrics_count_queries_without_hits_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    values = metrics.evaluate(qrels, {"q1": {"a": 1.0}, "q2": {}})
    assert values["ndcg@10"] == pytest.approx(0.5)
    assert values["mrr@10"] == pytest.approx(0.5)


def test_advisor_replays_the_threshold_rule() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    hits = {
        "q1": _hits([("a", 0.8), ("a", 0.75), ("x", 0.4)]),  # two chunks of one relevant doc
        "q2": _hits([("y", 0.6), ("b", 0.5), ("z", 0.2)]),
    }
    advice = advisor.advise(qrels, hits, "f1", depth=3)
    by_t = {p.threshold: p for p in advice.curves[3]}  # the curve at max_results 3
    # at 0.5 the kept hits are a, a, y, b: 3 relevant of 4, both documents found
    assert by_t[0.5].precision == pytest.approx(0.75)
    assert by_t[0.5].recall == pytest.approx(1.0)
    # at 0.51, b (0.5) is dropped: the service keeps score >= threshold only
    assert by_t[0.51].recall == pytest.approx(0.5)
    assert advice.best is not None
    assert (advice.best.threshold, advice.best.max_results) == (0.5, 2)
    assert advice.best.f1 == pytest.approx(6 / 7)
    # recall 1.0 needs b (0.5) kept: the highest such threshold, at the fewest results
    strict = advisor.advise(qrels, hits, "recall>=1.0", depth=3).best
    assert strict is not None
    assert (strict.threshold, strict.max_results) == (0.5, 2)
    # keep>=1.0 at a pinned max_results: drop nothing that max_results 3 finds
    kept = advisor.advise(qrels, hits, "keep>=1.0", depth=3, max_results=3).best
    assert kept is not None
    assert (kept.threshold, kept.max_results) == (0.5, 3)
    # at max_results 1 only q1's document is ever found: F1 pinned there is lower
    pinned = advisor.advise(qrels, hits, "f1", depth=3, max_results=1).best
    assert pinned is not None and pinned.max_results == 1
    for bad in ("precision", "recall>=0", "keep>=x"):
        with pytest.raises(ValueError, match="objective"):
            advisor.parse_objective(bad)


def test_apply_command_lines_name_the_fields() -> None:
    from benchmarks.quality_lib import apply

    line = apply.grpcurl_command("127.0.0.1:50051", "ds-1", 0.42, 5)
    assert '"similarityThreshold": 0.42' in line and "UpdateDatastore" in line
    assert '"paths": ["similarity_threshold", "max_results"]' in line
    request = apply.update_request("ds-1", 0.42, 5)
    assert list(request.update_mask.paths) == ["similarity_threshold", "max_results"]
