"""Benchmarks that drive the real service over gRPC (retrieval quality, speed)."""
