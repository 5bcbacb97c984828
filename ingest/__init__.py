"""Batch ingestion jobs: read files and record files, stream them into a datastore.

``python -m ingest`` / ``ingest`` (see ``ingest.cli``) talks to the service over
gRPC StreamIngest only: ``sources`` turns inputs into records, ``job`` streams
them (resuming after a dropped connection), ``report`` counts and summarises.
"""
