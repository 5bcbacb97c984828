"""Markdown tables from a scale run's results.json (for docs/scale.md).

.venv/bin/python -m benchmarks.scale_lib.report OUT_DIR/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _efs(rows: dict[str, Any]) -> list[str]:
    """The ef_search values swept, in order, over every row."""
    keys = {k for r in rows.values() for k in r.get("ef_search_sweep", {})}
    return sorted(keys, key=int)


def one_datastore(rows: dict[str, Any]) -> list[str]:
    out = [
        "| chunks | load, no index (chunks/s) | HNSW build (s) | build, 64 MB (s) "
        "| ingest into HNSW (chunks/s) | p50 / p99 c=1 (ms) | p50 / p99 c=8 (ms) | QPS c=8 "
        f"| recall@10 ef {' / '.join(_efs(rows))} | partition / index (MB) "
        "| PG PSS / service RSS (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows.values(), key=lambda r: int(r["chunks"])):
        if "c1" not in r:
            out.append(f"| {r['chunks']:,} (cut short: {sorted(r)}) |")
            continue
        sweep = r["ef_search_sweep"]
        recall = " / ".join(
            _f(sweep[k]["recall_at_10"], 3) if k in sweep else "-" for k in _efs(rows)
        )
        out.append(
            f"| {r['total_chunks']:,} | {_f(r['ingest_no_index_chunks_per_s'], 0)} "
            f"| {_f(r['build_s'])} ({r['build_memory_mb']} MB) | {_f(r.get('build_s_64mb'))} "
            f"| {_f(r.get('ingest_incremental_chunks_per_s'), 0)} "
            f"| {_f(r['c1']['p50_ms'])} / {_f(r['c1']['p99_ms'])} "
            f"| {_f(r['c8']['p50_ms'])} / {_f(r['c8']['p99_ms'])} | {_f(r['c8']['qps'])} "
            f"| {recall} | {_f(r['partition_mb'], 0)} / {_f(r['hnsw_index_mb'], 0)} "
            f"| {_f(r['pg_pss_mb'], 0)} / {_f(r['service_rss_mb'], 0)} |"
        )
    return out


def sweeps(rows: dict[str, Any]) -> list[str]:
    """ef_search against p50 / p99 (ms, concurrency 1) and recall@10, per index built."""
    efs = _efs(rows)
    out = [
        "| chunks | index (m, ef_construction) | build (s) | "
        + " | ".join(f"ef_search {k}" for k in efs)
        + " |",
        "|---:|---|---:|" + "---|" * len(efs),
    ]
    for r in sorted(rows.values(), key=lambda r: int(r["chunks"])):
        built = [(r["total_chunks"], "default (16, 64)", r.get("build_s"), r)]
        built += [
            (b["chunks"], f"{b['m']}, {b['ef_construction']}", b["build_s"], b)
            for b in r.get("rebuilds", {}).values()
        ]
        for chunks, name, build_s, figures in built:
            sweep = figures.get("ef_search_sweep", {})
            cells = [
                f"{_f(sweep[k]['p50_ms'])} / {_f(sweep[k]['p99_ms'])}, "
                f"{_f(sweep[k]['recall_at_10'], 3)}"
                if k in sweep
                else "-"
                for k in efs
            ]
            out.append(f"| {chunks:,} | {name} | {_f(build_s)} | " + " | ".join(cells) + " |")
    return out


def many(levels: dict[str, Any], agents: dict[str, Any]) -> list[str]:
    out = [
        "| datastores | create p50 / max (ms) | query p50 newest / oldest (ms) | planning (ms) "
        "| start-up (s) | pg_catalog (MB) | relations | PG PSS / service RSS (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(levels.values(), key=lambda r: int(r["datastores"])):
        out.append(
            f"| {r['datastores']:,} | {_f(r['create_p50_ms'])} / {_f(r['create_max_ms'])} "
            f"| {_f(r['query_newest']['p50_ms'])} / {_f(r['query_oldest']['p50_ms'])} "
            f"| {_f(r['planning_ms'], 2)} | {_f(r['startup_s'])} | {_f(r['catalog_mb'])} "
            f"| {r['relations']:,} | {_f(r['pg_pss_mb'], 0)} / {_f(r['service_rss_mb'], 0)} |"
        )
    sizes = [k for k in agents if k.isdigit()]
    if sizes:
        out += ["", "| datastores attached to the agent | query p50 / p99 (ms) |", "|---:|---:|"]
        out += [
            f"| {k} | {_f(agents[k]['p50_ms'])} / {_f(agents[k]['p99_ms'])} |"
            for k in sorted(sizes, key=int)
        ]
    return out


def merged(paths: list[Path]) -> dict[str, Any]:
    """The runs' results.json files as one (a run split in parts, e.g. the 1M size alone)."""
    data: dict[str, Any] = {"runs": []}
    for path in paths:
        part = json.loads(path.read_text())
        data["runs"].append({"file": str(path), **part["machine"], "wall_s": part.get("wall_s")})
        for key in ("one_datastore", "many_datastores"):
            data.setdefault(key, {}).update(part.get(key, {}))
        data.setdefault("agents", {}).update(part.get("agents", {}))
    return data


def main(argv: list[str]) -> int:
    """Tables of the given results.json files; with --plots DIR, their plots there too."""
    plots_dir = None
    if argv[:1] == ["--plots"]:
        plots_dir, argv = Path(argv[1]), argv[2:]
    data = merged([Path(a) for a in argv])
    for m in data["runs"]:
        print(
            f"- {m['file']}: {m['date']}, commit {m['commit']}, {m['cpus']} CPUs, load average "
            f"at start {' / '.join(_f(x, 1) for x in m['load_avg_at_start'])}, "
            f"wall {_f(m['wall_s'], 0)} s"
        )
    print()
    if data["one_datastore"]:
        print("\n".join(one_datastore(data["one_datastore"])) + "\n")
        print("\n".join(sweeps(data["one_datastore"])) + "\n")
    if data["many_datastores"]:
        print("\n".join(many(data["many_datastores"], data["agents"])))
    if plots_dir is not None:
        from benchmarks.scale_lib import plots

        commits = ", ".join(dict.fromkeys(m["commit"] for m in data["runs"]))
        title = f"benchmarks/scale.py, {data['runs'][0]['date']}, commits {commits}"
        plots.one_datastore(plots_dir / "scale-one-datastore.png", data["one_datastore"], title)
        plots.many_datastores(
            plots_dir / "scale-many-datastores.png",
            data["many_datastores"],
            data["agents"],
            title,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
