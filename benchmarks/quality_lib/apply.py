"""Putting the advisor's similarity_threshold and max_results on a datastore."""

from __future__ import annotations

import json
import shlex

from google.protobuf import field_mask_pb2

from service.client import Client, pb

PATHS = ["similarity_threshold", "max_results"]


def update_request(
    datastore_id: str, threshold: float, max_results: int
) -> pb.UpdateDatastoreRequest:
    return pb.UpdateDatastoreRequest(
        datastore=pb.Datastore(
            id=datastore_id, similarity_threshold=threshold, max_results=max_results
        ),
        update_mask=field_mask_pb2.FieldMask(paths=PATHS),
    )


def apply_advice(
    client: Client, datastore_id: str, threshold: float, max_results: int
) -> pb.Datastore:
    """UpdateDatastore with only the two fields in the mask; returns the updated datastore."""
    updated: pb.Datastore = client.datastores.UpdateDatastore(
        update_request(datastore_id, threshold, max_results)
    )
    return updated


def grpcurl_command(target: str, datastore_id: str, threshold: float, max_results: int) -> str:
    """The same UpdateDatastore as a grpcurl line (server reflection supplies the schema)."""
    body = {
        "datastore": {
            "id": datastore_id,
            "similarityThreshold": threshold,
            "maxResults": max_results,
        },
        "updateMask": {"paths": PATHS},
    }
    return (
        'grpcurl -plaintext -H "authorization: Bearer $RETRIEVAL_API_KEY" '
        f"-d {shlex.quote(json.dumps(body))} {target} "
        "agentopia.retrieval.v1.DatastoreService/UpdateDatastore"
    )


def benchmark_command(results_file: str, target: str, datastore_id: str) -> str:
    """This tool's own one-liner applying a saved advice to a datastore."""
    return (
        f".venv/bin/python -m benchmarks.quality --from-results {shlex.quote(results_file)} "
        f'--apply {datastore_id} --target {target} --key "$RETRIEVAL_API_KEY"'
    )
