"""Embedding models: loading, sharing and batching."""
