"""Agentopia Retrieval: a gRPC retrieval service over PostgreSQL + pgvector."""

__version__ = "0.1.0"
