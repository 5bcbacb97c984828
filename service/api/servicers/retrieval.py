from __future__ import annotations

from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service._proto.agentopia.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from service.api import converters as conv
from service.api.rpc import authenticated
from service.core.identity import Identity
from service.core.retrieval import Retrieval
from service.models import Principal


class RetrievalServicer(pb_grpc.RetrievalServiceServicer):
    def __init__(self, identity: Identity, retrieval: Retrieval) -> None:
        self.identity = identity
        self._retrieval = retrieval

    @authenticated
    def Query(self, request: pb.QueryRequest, p: Principal) -> pb.QueryResponse:
        return conv.query_response(self._retrieval.query(p, conv.query_spec(request)))
