"""Batch ingestion jobs that talk to the service over gRPC (see the ingestion-jobs issue)."""
