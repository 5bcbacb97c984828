from __future__ import annotations

import itertools
from collections.abc import Iterator

from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service._proto.agentopia.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from service.api import converters as conv
from service.api.rpc import authenticated, authenticated_stream
from service.core.documents import Documents
from service.core.identity import Identity
from service.core.ingestion import Ingestion
from service.core.stream_ingest import StreamIngest, StreamItem
from service.core.validation import parse_uuid
from service.errors import InvalidArgument
from service.models import DocumentInput, Principal


def _stream_items(requests: Iterator[pb.StreamIngestRequest]) -> Iterator[StreamItem]:
    for i, request in enumerate(requests):
        try:
            document = conv.document_input(request.document, f"documents[{i}]")
        except InvalidArgument as e:  # e.g. a NaN in a Struct: this document fails, not the stream
            bare = DocumentInput(request.document.external_id)
            yield StreamItem(bare, request.datastore_id, str(e), request.ByteSize())
            continue
        yield StreamItem(document, request.datastore_id, size=request.ByteSize())


class IngestServicer(pb_grpc.IngestServiceServicer):
    def __init__(self, identity: Identity, ingestion: Ingestion, documents: Documents) -> None:
        self.identity = identity
        self._ingestion = ingestion
        self._documents = documents
        self._stream = StreamIngest(ingestion)

    @authenticated
    def IngestDocuments(
        self, request: pb.IngestDocumentsRequest, p: Principal
    ) -> pb.IngestDocumentsResponse:
        results = self._ingestion.ingest(
            p,
            parse_uuid(request.datastore_id, "datastore_id"),
            [conv.document_input(d, f"documents[{i}]") for i, d in enumerate(request.documents)],
        )
        return pb.IngestDocumentsResponse(
            results=[conv.document_result(r) for r in results],
            consistency_token=results[0].consistency_token if results else "",
        )

    @authenticated_stream
    def StreamIngest(
        self, requests: Iterator[pb.StreamIngestRequest], p: Principal
    ) -> Iterator[pb.DocumentResult]:
        first = next(requests, None)
        if first is None:
            return
        datastore = self._stream.open(p, parse_uuid(first.datastore_id, "datastore_id"))
        items = _stream_items(itertools.chain([first], requests))
        for result in self._stream.run(datastore, items):
            yield conv.document_result(result)

    @authenticated
    def GetDocument(self, request: pb.GetDocumentRequest, p: Principal) -> pb.GetDocumentResponse:
        doc, chunks = self._documents.get(
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
        page = self._documents.list_page(
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
        count, missing = self._documents.delete(
            p, parse_uuid(request.datastore_id, "datastore_id"), list(request.external_ids)
        )
        return pb.DeleteDocumentsResponse(deleted_count=count, not_found=missing)
