"""PNG figures of the scale benchmark (small: docs/img keeps them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt


def one_datastore(path: Path, sizes: dict[str, dict[str, Any]], title: str) -> None:
    """Latency, recall, ingest rate and build time against the datastore's size."""
    rows = sorted((r for r in sizes.values() if "c1" in r), key=lambda r: int(r["chunks"]))
    if not rows:
        return
    x = [int(r["total_chunks"]) for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=80)
    lat, rec, ing, bld = axes.flat
    for c in ("c1", "c8"):
        lat.plot(x, [r[c]["p50_ms"] for r in rows], "o-", label=f"p50, concurrency {c[1:]}")
        lat.plot(x, [r[c]["p99_ms"] for r in rows], "o--", label=f"p99, concurrency {c[1:]}")
    lat.set_ylabel("query latency (ms)")
    lat.set_yscale("log")
    for ef in rows[0]["ef_search_sweep"]:
        recall = [r["ef_search_sweep"][ef]["recall_at_10"] for r in rows]
        rec.plot(x, recall, "o-", label=f"ef_search {ef}")
    rec.axhline(0.95, color="tab:red", linestyle=":", label="target 0.95")
    rec.set_ylabel("recall@10 vs exact")
    ing.plot(x, [r["ingest_no_index_chunks_per_s"] for r in rows], "o-", label="no index")
    top_up = [
        (n, r["ingest_incremental_chunks_per_s"])
        for n, r in zip(x, rows, strict=True)
        if "ingest_incremental_chunks_per_s" in r
    ]
    if top_up:
        ing.plot(*zip(*top_up, strict=True), "o-", label="into the HNSW index")
    ing.set_ylabel("StreamIngest chunks/s")
    bld.plot(x, [r["build_s"] for r in rows], "o-", label="HNSW build")
    with_64 = [(n, r["build_s_64mb"]) for n, r in zip(x, rows, strict=True) if "build_s_64mb" in r]
    if with_64:
        bld.plot(*zip(*with_64, strict=True), "s", label="build, 64 MB maintenance_work_mem")
    bld.set_ylabel("build time (s)")
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_xlabel("chunks in the datastore")
    _save(fig, axes, title, path)


def many_datastores(
    path: Path, levels: dict[str, dict[str, Any]], agents: dict[str, Any], title: str
) -> None:
    """Create and query time, start-up and catalog against the number of datastores; agents."""
    rows = sorted(levels.values(), key=lambda r: int(r["datastores"]))
    if not rows:
        return
    x = [int(r["datastores"]) for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=80)
    ms, up, cat, agent = axes.flat
    ms.plot(x, [r["create_p50_ms"] for r in rows], "o-", label="CreateDatastore p50")
    ms.plot(x, [r["query_newest"]["p50_ms"] for r in rows], "o-", label="Query p50 (one)")
    ms.plot(x, [r["planning_ms"] for r in rows], "o-", label="planning of the search")
    ms.set_ylabel("ms")
    ms.set_yscale("log")
    up.plot(x, [r["startup_s"] for r in rows], "o-", label="start-up to SERVING")
    up.set_ylabel("seconds")
    cat.plot(x, [r["catalog_mb"] for r in rows], "o-", label="pg_catalog size")
    cat.plot(x, [r["pg_pss_mb"] for r in rows], "o-", label="PostgreSQL PSS")
    cat.set_ylabel("MB")
    for ax in (ms, up, cat):
        ax.set_xscale("log")
        ax.set_xlabel("datastores")
    sizes = [k for k in agents if k.isdigit()]
    agent.plot([int(k) for k in sizes], [agents[k]["p50_ms"] for k in sizes], "o-", label="p50")
    agent.set_xlabel("datastores attached to the agent")
    agent.set_ylabel("agent query (ms)")
    _save(fig, axes, title, path)


def _save(fig: Any, axes: Any, title: str, path: Path) -> None:
    """Grid and legend on every panel, the title, then the PNG."""
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
