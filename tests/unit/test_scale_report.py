"""The scale report's tables from a results.json (no database)."""

from __future__ import annotations

from typing import Any

from benchmarks.scale_lib.report import one_datastore, sweeps


def _point(p50: float, recall: float) -> dict[str, float]:
    return {"p50_ms": p50, "p99_ms": 2 * p50, "recall_at_10": recall}


def _rows() -> dict[str, Any]:
    small = {
        "chunks": 10_000,
        "total_chunks": 10_000,
        "build_s": 3.9,
        "ef_search_sweep": {"100": _point(6.4, 0.997), "200": _point(7.7, 0.999)},
    }
    big = {
        "chunks": 1_000_000,
        "total_chunks": 1_000_000,
        "build_s": 673.6,
        "ef_search_sweep": {"100": _point(23.6, 0.928), "800": _point(54.8, 0.995)},
        "rebuilds": {
            "m32_efc128": {
                "chunks": 1_010_000,
                "m": 32,
                "ef_construction": 128,
                "build_s": 1200.0,
                "ef_search_sweep": {"100": _point(20.0, 0.97)},
            }
        },
    }
    return {"1000000": big, "10000": small}


def test_the_sweep_table_has_every_ef_search_swept_and_each_rebuilt_index() -> None:
    lines = sweeps(_rows())
    assert lines[0] == (
        "| chunks | index (m, ef_construction) | build (s) "
        "| ef_search 100 | ef_search 200 | ef_search 800 |"
    )
    assert (
        lines[2]
        == "| 10,000 | default (16, 64) | 3.9 | 6.4 / 12.8, 0.997 | 7.7 / 15.4, 0.999 | - |"
    )
    assert lines[3].startswith("| 1,000,000 | default (16, 64) | 673.6 | 23.6 / 47.2, 0.928 | - |")
    assert lines[4] == "| 1,010,000 | 32, 128 | 1,200.0 | 20.0 / 40.0, 0.970 | - | - |"


def test_the_one_datastore_table_names_the_ef_search_values_of_its_recall_column() -> None:
    rows = _rows()
    for row in rows.values():
        row.pop("rebuilds", None)
    assert "| recall@10 ef 100 / 200 / 800 |" in one_datastore(rows)[0]
