from __future__ import annotations

from service._proto.agentopia.retrieval.v1 import retrieval_pb2 as pb
from service._proto.agentopia.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from service.api import converters as conv
from service.api.rpc import authenticated
from service.core.agents import Agents
from service.core.identity import Identity
from service.core.validation import parse_uuid
from service.models import Principal


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, identity: Identity, agents: Agents) -> None:
        self.identity = identity
        self._agents = agents

    @authenticated
    def CreateAgent(self, request: pb.CreateAgentRequest, p: Principal) -> pb.Agent:
        return conv.agent(self._agents.create(p, conv.agent_fields(request)))

    @authenticated
    def GetAgent(self, request: pb.GetAgentRequest, p: Principal) -> pb.Agent:
        return conv.agent(self._agents.get(p, parse_uuid(request.id, "id")))

    @authenticated
    def ListAgents(self, request: pb.ListAgentsRequest, p: Principal) -> pb.ListAgentsResponse:
        page = self._agents.list_page(p, request.page_size, request.page_token)
        return pb.ListAgentsResponse(
            agents=[conv.agent(a) for a in page.items], next_page_token=page.next_page_token
        )

    @authenticated
    def DeleteAgent(self, request: pb.DeleteAgentRequest, p: Principal) -> pb.DeleteAgentResponse:
        self._agents.delete(p, parse_uuid(request.id, "id"))
        return pb.DeleteAgentResponse(deleted=True)

    @authenticated
    def AttachDatastore(
        self, request: pb.AttachDatastoreRequest, p: Principal
    ) -> pb.AgentDatastore:
        link = self._agents.attach(
            p,
            parse_uuid(request.agent_id, "agent_id"),
            parse_uuid(request.datastore_id, "datastore_id"),
        )
        return conv.link(link)

    @authenticated
    def DetachDatastore(
        self, request: pb.DetachDatastoreRequest, p: Principal
    ) -> pb.DetachDatastoreResponse:
        detached = self._agents.detach(
            p,
            parse_uuid(request.agent_id, "agent_id"),
            parse_uuid(request.datastore_id, "datastore_id"),
        )
        return pb.DetachDatastoreResponse(detached=detached)

    @authenticated
    def ListAgentDatastores(
        self, request: pb.ListAgentDatastoresRequest, p: Principal
    ) -> pb.ListAgentDatastoresResponse:
        pairs = self._agents.datastores(p, parse_uuid(request.agent_id, "agent_id"))
        return pb.ListAgentDatastoresResponse(
            links=[conv.link(link) for link, _ in pairs],
            datastores=[conv.datastore(d) for _, d in pairs],
        )
