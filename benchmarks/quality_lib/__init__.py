"""Parts of the retrieval-quality benchmark (``benchmarks/quality.py``), one job per module."""
