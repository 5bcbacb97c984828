from __future__ import annotations

from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service._proto.agentopia.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from service.api import converters as conv
from service.api.rpc import authenticated
from service.core.datastores import Datastores
from service.core.identity import Identity
from service.core.validation import parse_uuid
from service.models import Principal


class DatastoreServicer(pb_grpc.DatastoreServiceServicer):
    def __init__(self, identity: Identity, datastores: Datastores) -> None:
        self.identity = identity
        self._datastores = datastores

    @authenticated
    def CreateDatastore(self, request: pb.CreateDatastoreRequest, p: Principal) -> pb.Datastore:
        created = self._datastores.create(p, conv.create_datastore_fields(request))
        return conv.datastore(created)

    @authenticated
    def GetDatastore(self, request: pb.GetDatastoreRequest, p: Principal) -> pb.Datastore:
        return conv.datastore(self._datastores.get(p, parse_uuid(request.id, "id")))

    @authenticated
    def ListDatastores(
        self, request: pb.ListDatastoresRequest, p: Principal
    ) -> pb.ListDatastoresResponse:
        page = self._datastores.list_page(p, request.page_size, request.page_token)
        return pb.ListDatastoresResponse(
            datastores=[conv.datastore(d) for d in page.items], next_page_token=page.next_page_token
        )

    @authenticated
    def UpdateDatastore(self, request: pb.UpdateDatastoreRequest, p: Principal) -> pb.Datastore:
        updated = self._datastores.update(
            p,
            parse_uuid(request.datastore.id, "datastore.id"),
            conv.update_datastore_fields(request.datastore),
            list(request.update_mask.paths),
        )
        return conv.datastore(updated)

    @authenticated
    def DeleteDatastore(
        self, request: pb.DeleteDatastoreRequest, p: Principal
    ) -> pb.DeleteDatastoreResponse:
        self._datastores.delete(p, parse_uuid(request.id, "id"))
        return pb.DeleteDatastoreResponse(deleted=True)
