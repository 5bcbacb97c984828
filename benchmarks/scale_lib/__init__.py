"""Parts of benchmarks/scale.py: vectors, measurements, probes and plots."""
