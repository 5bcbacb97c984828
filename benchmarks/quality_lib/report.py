"""results.json and report.md: the figures, the configuration, the advice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NAMES = ["ndcg@10", "recall@10", "recall@100", "mrr@10", "map"]

# all-MiniLM-L6-v2, exact cosine, MTEB results repository (MTEB 1.12.75), test split.
PUBLISHED: dict[str, dict[str, float]] = {
    "scifact": {"ndcg@10": 0.64508, "recall@10": 0.78333, "recall@100": 0.925, "mrr@10": 0.60472},
}
PUBLISHED_SOURCE = "all-MiniLM-L6-v2, exact cosine, MTEB results repository (MTEB 1.12.75)"


def published_for(dataset: str, reproduce: bool) -> dict[str, float] | None:
    """The published figures this run can be compared with, if any."""
    return PUBLISHED.get(dataset.lower()) if reproduce else None


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.5f}"
    return "—" if value is None else str(value)


def _row(label: str, values: dict[str, Any]) -> str:
    return "| " + " | ".join([label, *(_fmt(values.get(n)) for n in NAMES)]) + " |"


def _table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    head = ["| run | " + " | ".join(NAMES) + " |", "|---" * (len(NAMES) + 1) + "|"]
    return head + [_row(label, values) for label, values in rows]


def markdown(results: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The human-readable report."""
    cfg = results["config"]
    runs = results["runs"]
    ds = results["dataset"]
    store = results["datastore"]
    lines = [
        f"# Retrieval quality: {ds['name']}",
        "",
        f"{ds['documents']} documents ({results['ingest']['chunks']} chunks), "
        f"{ds['queries']} judged queries, {ds['judgements']} judgements. "
        f"Mode `{cfg['mode']}`, metric `{cfg['metric']}`, "
        + (
            "reproduction (MTEB setting): one caller-made chunk per document, "
            "title + ' ' + text, truncated at the model's window"
            if cfg["reproduce"]
            else f"server chunking: chunk_size {store['chunk_size']}, "
            f"chunk_overlap {store['chunk_overlap']} tokens"
        )
        + f"; ef_search {store['ef_search']}, top_k {cfg['top_k']}. "
        "Document-level metrics (ir-measures / trec_eval): a document scores its best chunk's "
        "score. MAP is over each query's whole ranked list (top_k documents).",
        "",
        "## Headline figures",
        "",
        f"Primary search: **{cfg['search']}**.",
        "",
    ]
    rows: list[tuple[str, dict[str, Any]]] = [
        ("this run (primary)", results),
        ("exact search", runs["exact"]),
        (
            f"HNSW at max_results {cfg['top_k']} (ef_search max({store['ef_search']}, k))",
            runs["hnsw"],
        ),
        (f"HNSW at max_results 10 (ef_search {store['ef_search']})", runs["hnsw@10"]),
    ]
    if results.get("published"):
        rows.append(("published", results["published"]))
        rows.append(("difference (this - published)", results["published_diff"]))
    if baseline is not None:
        rows.append((f"baseline: {baseline.get('label', 'other run')}", baseline))
    lines += _table(rows)
    hv = results["hnsw_vs_exact"]
    lines += [
        "",
        "## HNSW against exact search",
        "",
        f"At max_results 10 with the datastore's ef_search ({hv['ef_search']}): recall@10 of "
        f"the HNSW top 10 against the exact top 10 = **{hv['recall@10']:.4f}**; "
        f"nDCG@10 exact {hv['ndcg@10_exact']:.5f}, HNSW {hv['ndcg@10_hnsw']:.5f}, "
        f"difference (HNSW - exact) **{hv['ndcg@10_diff']:+.5f}**.",
        "",
    ]
    lines += _advice_section(results)
    ingest = results["ingest"]
    lines += [
        "## Run",
        "",
        f"Ingest: {ingest['documents']} documents, {ingest['chunks']} chunks in "
        f"{ingest['seconds']:.1f}s ({ingest['docs_per_s']:.1f} docs/s). "
        + "; ".join(f"{name}: {r['seconds']:.1f}s ({r['qps']:.1f} q/s)" for name, r in runs.items())
        + f". Total {results['timing']['total_s']:.0f}s.",
        "",
        "![metrics](metrics.png)",
        "",
    ]
    return "\n".join(lines)


def _advice_section(results: dict[str, Any]) -> list[str]:
    adv = results["advice"]
    lines = ["## Threshold advisor", ""]
    if adv.get("not_applicable"):
        return [*lines, f"Not applicable: {adv['not_applicable']}.", ""]
    if adv["reachable"]:
        at = adv["at_advice"]
        lines.append(
            f"Objective `{adv['objective']}` → **similarity_threshold "
            f"{adv['similarity_threshold']:.2f}, max_results {adv['max_results']}** "
            f"(precision of kept hits {at['precision']:.3f}, "
            f"recall of relevant documents {at['recall']:.3f}, F1 {at['f1']:.3f}, "
            f"{at['kept_per_query']:.2f} hits kept per query)."
        )
    else:
        lines.append(f"Objective `{adv['objective']}` cannot be met by any pair on the grid.")
    lines += [
        "",
        "Per max_results: recall and precision with no threshold, the threshold with the best F1, "
        "and the highest threshold keeping ≥ 90% of the no-threshold recall.",
        "",
        "| max_results | recall @ t=0 | precision @ t=0 | best-F1 threshold | F1 | P | R "
        "| keep-90% threshold | P | R |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in adv["by_max_results"]:
        lines.append(
            f"| {r['max_results']} | {r['recall_at_threshold_0']:.3f} "
            f"| {r['precision_at_threshold_0']:.3f} | {r['best_f1_threshold']:.2f} "
            f"| {r['best_f1']:.3f} | {r['best_f1_precision']:.3f} | {r['best_f1_recall']:.3f} "
            f"| {r['keep90_threshold']:.2f} | {r['keep90_precision']:.3f} "
            f"| {r['keep90_recall']:.3f} |"
        )
    rel, non = adv["scores"]["relevant"], adv["scores"]["non_relevant"]
    lines += [
        "",
        "Scores of chunk hits (quantiles p5 / p25 / median / p75 / p95): relevant "
        + " / ".join(_fmt(rel.get(k)) for k in ("p5", "p25", "p50", "p75", "p95"))
        + f" (n={rel['count']}); non-relevant or unjudged "
        + " / ".join(_fmt(non.get(k)) for k in ("p5", "p25", "p50", "p75", "p95"))
        + f" (n={non['count']}).",
        "",
        "![scores](scores.png)",
        "",
        "![threshold](threshold.png)",
        "",
    ]
    if adv["reachable"]:
        apply = results["apply"]
        lines += [
            "Apply to a datastore (either line; set RETRIEVAL_API_KEY, and replace "
            "DATASTORE_ID and the target):",
            "",
            "```sh",
            apply["benchmark"],
            apply["grpcurl"],
            "```",
            "",
        ]
    return lines
