from __future__ import annotations

from collections.abc import Iterator

import grpc

from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service._proto.agentopia.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from service.api import converters as conv
from service.api.rpc import authenticated
from service.core.identity import Identity
from service.core.ingestion import Ingestion
from service.core.validation import parse_uuid
from service.models import Principal


class IngestServicer(pb_grpc.IngestServiceServicer):
    def __init__(self, identity: Identity, ingestion: Ingestion) -> None:
        self.identity = identity
        self._ingestion = ingestion

    @authenticated
    def IngestDocuments(
        self, request: pb.IngestDocumentsRequest, p: Principal
    ) -> pb.IngestDocumentsResponse:
        results = self._ingestion.ingest(
            p,
            parse_uuid(request.datastore_id, "datastore_id"),
            [conv.document_input(d) for d in request.documents],
        )
        return pb.IngestDocumentsResponse(results=[conv.document_result(r) for r in results])

    def StreamIngest(
        self, request_iterator: Iterator[pb.StreamIngestRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.DocumentResult]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "StreamIngest is not available yet")

    @authenticated
    def GetDocument(self, request: pb.GetDocumentRequest, p: Principal) -> pb.GetDocumentResponse:
        doc, chunks = self._ingestion.get(
            p,
            parse_uuid(request.datastore_id, "datastore_id"),
            request.external_id,
            request.include_chunks,
        )
        return pb.GetDocumentResponse(
            document=conv.document(doc), chunks=[conv.chunk(c) for c in chunks]
        )

    @authenticated
    def ListDocuments(
        self, request: pb.ListDocumentsRequest, p: Principal
    ) -> pb.ListDocumentsResponse:
        page = self._ingestion.list_page(
            p,
            parse_uuid(request.datastore_id, "datastore_id"),
            request.page_size,
            request.page_token,
        )
        return pb.ListDocumentsResponse(
            documents=[conv.document(d) for d in page.items], next_page_token=page.next_page_token
        )

    @authenticated
    def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, p: Principal
    ) -> pb.DeleteDocumentsResponse:
        count, missing = self._ingestion.delete(
            p, parse_uuid(request.datastore_id, "datastore_id"), list(request.external_ids)
        )
        return pb.DeleteDocumentsResponse(deleted_count=count, not_found=missing)
