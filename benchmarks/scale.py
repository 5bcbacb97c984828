"""Scale curves: one datastore to 100k (1M) chunks, 1,000 (5,000) datastores, agents.

Vectors are caller-supplied (a datastore with embedding_model "none", 384 dimensions):
SciFact's passages embedded once with the bundled MiniLM model (cached under
~/.cache/agentopia-scale), then synthetic vectors drawn around them with a fixed seed
(``benchmarks/scale_lib/vectors.py``). Queries are SciFact's query embeddings and noisy
variants of them; recall@10 is measured against an exact numpy search of the same vectors.

The service runs as a real ``python -m service serve`` process (embedded PostgreSQL);
the benchmark talks to it over gRPC, and reads sizes, memory and plans from PostgreSQL.

    .venv/bin/python -m benchmarks.scale --out OUT_DIR          # 10k, 100k; 10, 1,000
    .venv/bin/python -m benchmarks.scale --out OUT_DIR --full   # + 1M; + 5,000

One datastore only, at chosen sizes, with more ef_search values and a rebuilt index:

    .venv/bin/python -m benchmarks.scale --out OUT_DIR --sizes 1000000 --levels
        --skip-64mb-build --ef-search 100 200 400 800 --rebuild 32:128

Writes OUT_DIR/results.json after every section (a partial run is usable) and PNG plots.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._harness import REPO, SCIFACT
from benchmarks.scale_lib import many, plots, single
from benchmarks.scale_lib.many import serving
from benchmarks.scale_lib.vectors import Matrix, query_set, scifact_embeddings
from service.client import connect

BIG = 100_000  # sizes above this run last, after the many-datastores section
CACHE = Path.home() / ".cache" / "agentopia-scale" / "scifact-minilm.npz"


def _machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "load_avg_at_start": os.getloadavg(),
    }


class Results:
    """results.json, rewritten whenever a figure arrives."""

    def __init__(self, out: Path, head: dict[str, Any]) -> None:
        self.path = out / "results.json"
        self.data: dict[str, Any] = dict(head)

    def save(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.data["load_avg_now"] = os.getloadavg()
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")


def _server_settings() -> dict[str, str]:
    return {
        "onnx_cache_dir": str(REPO / ".venv" / "model-cache"),
        "max_calls_per_principal": "16",  # concurrency 8 from one key
        "max_results_cap": "1000",
    }


class _OneDatastore:
    """The one-datastore section, in its own data directory (kept between calls)."""

    def __init__(
        self,
        data_dir: Path,
        out: Path,
        settings: dict[str, str],
        vectors: tuple[Matrix, Matrix],
        results: Results,
        options: single.Options,
    ) -> None:
        self.data_dir, self.out, self.settings = data_dir, out, settings
        self.vectors, self.results, self.options = vectors, results, options
        self.figures: dict[str, Any] = {}

    def _save(self, size: int, row: dict[str, Any]) -> None:
        self.figures[str(size)] = dict(row)
        self.results.save("one_datastore", self.figures)

    def run(self, sizes: list[int], seed: int) -> None:
        if not sizes:
            return
        log = self.out / f"serve-sizes-{sizes[0]}.log"
        with serving(self.data_dir, log, self.settings) as (served, _):
            client = connect(served.target, served.key)
            for i, size in enumerate(sizes):
                print(f"one datastore of {size} chunks", flush=True)
                self.figures[str(size)] = single.measure(
                    client,
                    self.data_dir,
                    served.pid,
                    self.vectors,
                    size,
                    seed + i,
                    functools.partial(self._save, size),
                    self.options,
                )
                png = self.out / "scale-one-datastore.png"
                plots.one_datastore(png, self.figures, _title(self.results))
            client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for results and plots")
    parser.add_argument("--full", action="store_true", help="also 1M chunks, 5,000 datastores")
    parser.add_argument("--sizes", type=int, nargs="*", help="override the datastore sizes")
    parser.add_argument("--levels", type=int, nargs="*", help="override the datastore counts")
    parser.add_argument(
        "--ef-search",
        type=int,
        nargs="+",
        default=list(single.EF_SWEEP),
        help="the ef_search values swept at each size (default: 100 200 400)",
    )
    parser.add_argument(
        "--rebuild",
        nargs="*",
        default=[],
        metavar="M:EF_CONSTRUCTION",
        help="after each size, rebuild its index with these m:ef_construction and sweep again",
    )
    parser.add_argument(
        "--skip-64mb-build",
        action="store_true",
        help="skip the build with PostgreSQL's default 64 MB at 100k chunks",
    )
    parser.add_argument(
        "--shared-buffers-mb",
        type=int,
        help="then raise PostgreSQL's shared_buffers to this (restart) and sweep again",
    )
    parser.add_argument(
        "--no-top-up", action="store_true", help="skip the incremental ingest after the queries"
    )
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--cache", type=Path, default=CACHE, help="the SciFact embeddings file")
    parser.add_argument("--tmp", type=Path, help="where the data directories go (default: TMPDIR)")
    args = parser.parse_args(argv)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C: every server started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [10_000, 100_000, 1_000_000] if args.full else [10_000, 100_000]
    levels = [10, 1_000, 5_000] if args.full else [10, 1_000]
    sizes = args.sizes if args.sizes is not None else sizes  # "--sizes" alone: none
    levels = args.levels if args.levels is not None else levels
    started = time.perf_counter()
    results = Results(args.out, {"machine": _machine(), "full": args.full, "seed": args.seed})
    base, real_queries = scifact_embeddings(SCIFACT, args.cache)
    queries = query_set(real_queries, 400, args.seed)
    results.save("vectors", {"real_passages": len(base), "real_queries": len(real_queries)})
    settings = _server_settings()
    vectors = (base, queries)
    options = single.Options(
        ef_sweep=args.ef_search,
        compare_memory_at=None if args.skip_64mb_build else BIG,
        shared_buffers_mb=args.shared_buffers_mb,
        top_up=not args.no_top_up,
        rebuilds=[_graph(text) for text in args.rebuild],
    )
    with tempfile.TemporaryDirectory(prefix="scale-", dir=args.tmp) as tmp:
        one = _OneDatastore(Path(tmp) / "one", args.out, settings, vectors, results, options)
        one.run([s for s in sizes if s <= BIG], args.seed)
        if levels:  # before the biggest size: a run cut short still has these
            many.run(
                Path(tmp) / "many", args.out, settings, levels, vectors, args.seed, results.save
            )
            plots.many_datastores(
                args.out / "scale-many-datastores.png",
                results.data.get("many_datastores", {}),
                results.data.get("agents", {}),
                _title(results),
            )
        one.run([s for s in sizes if s > BIG], args.seed + 100)
    results.save("wall_s", time.perf_counter() - started)
    print(f"done in {results.data['wall_s']:.0f} s: {results.path}")
    return 0


def _graph(text: str) -> tuple[int, int]:
    """(m, ef_construction) from "m:ef_construction", e.g. "32:128"."""
    m, _, ef_construction = text.partition(":")
    return int(m), int(ef_construction)


def _title(results: Results) -> str:
    m = results.data["machine"]
    return f"benchmarks/scale.py, {m['date']}, {m['cpus']} CPUs, commit {m['commit']}"


if __name__ == "__main__":
    raise SystemExit(main())
