"""PNG figures: headline metrics per run, score distributions, the threshold trade-off."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np

from benchmarks.quality_lib.advisor import Advice

NAMES = ["ndcg@10", "recall@10", "recall@100", "mrr@10", "map"]


def metrics_chart(path: Path, runs: dict[str, dict[str, float]], title: str) -> None:
    """Grouped bars: one group per measure, one bar per run (missing measures left out)."""
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(NAMES))
    for i, (label, values) in enumerate(runs.items()):
        heights = [values.get(n, np.nan) for n in NAMES]
        bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, heights, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(x, NAMES)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("score (document level)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=len(runs))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def score_histogram(path: Path, advice: Advice, depth: int, title: str) -> None:
    """Score densities of relevant vs non-relevant chunk hits, with the advised threshold."""
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    values = advice.relevant_scores + advice.nonrelevant_scores
    lo = min(values, default=0.0)
    hi = max(values, default=1.0)
    bins = np.linspace(np.floor(lo * 20) / 20, np.ceil(hi * 20) / 20, 41).tolist()
    ax.hist(
        advice.nonrelevant_scores,
        bins=bins,
        density=True,
        alpha=0.55,
        color="tab:gray",
        label=f"non-relevant / unjudged hits (n={len(advice.nonrelevant_scores)})",
    )
    ax.hist(
        advice.relevant_scores,
        bins=bins,
        density=True,
        alpha=0.6,
        color="tab:green",
        label=f"relevant hits (n={len(advice.relevant_scores)})",
    )
    if advice.best is not None:
        ax.axvline(advice.best.threshold, color="tab:red", linestyle="--", linewidth=1.5)
        ax.text(
            advice.best.threshold,
            ax.get_ylim()[1] * 0.95,
            f" advised threshold {advice.best.threshold:.2f}",
            color="tab:red",
            fontsize=8,
            va="top",
        )
    ax.set_xlabel("hit score (higher is better)")
    ax.set_ylabel("density")
    ax.set_title(f"{title}\nchunk hits in each query's top {depth}, no threshold", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def threshold_chart(path: Path, advice: Advice, title: str) -> None:
    """Precision, recall and F1 of the kept hits against similarity_threshold."""
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    curve = advice.curve
    t = [p.threshold for p in curve]
    ax.plot(t, [p.precision for p in curve], label="precision of kept hits", color="tab:blue")
    ax.plot(t, [p.recall for p in curve], label="recall of relevant documents", color="tab:green")
    ax.plot(t, [p.f1 for p in curve], label="F1", color="tab:purple", linestyle="--")
    n = curve[0].max_results if curve else 0
    if advice.best is not None:
        b = advice.best
        ax.axvline(b.threshold, color="tab:red", linestyle=":", linewidth=1.5)
        ax.annotate(
            f"advice: threshold {b.threshold:.2f}, max_results {b.max_results}\n"
            f"P={b.precision:.3f} R={b.recall:.3f} F1={b.f1:.3f}",
            xy=(b.threshold, b.f1),
            xytext=(0.02, 0.05),
            textcoords="axes fraction",
            fontsize=8,
            color="tab:red",
        )
    # the hits actually present set the useful range; the grid runs 0..1
    lo = min((p.threshold for p in curve if p.kept_per_query < curve[0].kept_per_query), default=0)
    ax.set_xlim(max(0.0, lo - 0.1), 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("similarity_threshold (hits kept when score >= threshold)")
    ax.set_ylabel("fraction")
    ax.set_title(f"{title}\nmax_results = {n}", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
