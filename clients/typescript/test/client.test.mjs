// The client against a live server, over every protocol. Driven by tests/test_ts_client.py,
// which starts the server and passes its addresses and two users' keys in the environment.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code, ConnectError, IngestStatus, createRetrievalClient } from "../dist/index.js";

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set (run through tests/test_ts_client.py)`);
  return value;
};
const HTTP_URL = env("RETRIEVAL_TEST_HTTP_URL");
const GRPC_URL = env("RETRIEVAL_TEST_GRPC_URL");
const KEY = env("RETRIEVAL_TEST_API_KEY");
const OTHER_KEY = env("RETRIEVAL_TEST_OTHER_API_KEY");

const WIRES = [
  { name: "connect-json", baseUrl: HTTP_URL, protocol: "connect", binary: false },
  { name: "connect-binary", baseUrl: HTTP_URL, protocol: "connect", binary: true },
  { name: "grpc-web", baseUrl: HTTP_URL, protocol: "grpc-web" },
  { name: "grpc", baseUrl: GRPC_URL, protocol: "grpc" },
];

const DOCS = [
  ["pg", "db", "PostgreSQL is a relational database; pgvector adds vector similarity search."],
  ["hnsw", "db", "HNSW graphs answer approximate nearest neighbour queries quickly."],
  ["cat", "pets", "Cats sleep for most of the day and hunt at dusk."],
  ["dog", "pets", "Dogs enjoy long walks and playing fetch in the park."],
];

async function codeOf(promise) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${e}`);
    assert.ok(e.rawMessage.length > 0);
    return e.code;
  }
  assert.fail("the call succeeded");
}

for (const wire of WIRES) {
  describe(wire.name, () => {
    // one wire uses getToken, the rest a fixed key: both paths set the same header
    const auth = wire.protocol === "grpc-web" ? { getToken: async () => KEY } : { apiKey: KEY };
    const client = createRetrievalClient({ ...wire, ...auth, timeoutMs: 60_000 });
    const state = {};

    test("create a datastore", async () => {
      const ds = await client.datastores.createDatastore({
        name: `ts-${wire.name}`,
        similarityThreshold: 0.2,
        maxResults: 3,
      });
      assert.match(ds.id, /^[0-9a-f-]{36}$/);
      assert.equal(ds.similarityThreshold, 0.2);
      state.datastoreId = ds.id;
    });

    test("ingest documents", async () => {
      const reply = await client.ingest.ingestDocuments({
        datastoreId: state.datastoreId,
        documents: DOCS.map(([externalId, topic, text]) => ({
          externalId,
          text,
          metadata: { topic },
        })),
      });
      assert.deepEqual(
        reply.results.map((r) => [r.externalId, r.status]),
        DOCS.map(([id]) => [id, IngestStatus.CREATED]),
      );
    });

    test("create an agent and attach the datastore", async () => {
      const agent = await client.agents.createAgent({ name: `agent-${wire.name}` });
      const link = await client.agents.attachDatastore({
        agentId: agent.id,
        datastoreId: state.datastoreId,
      });
      assert.equal(link.agentId, agent.id);
      state.agentId = agent.id;
    });

    test("an agent query", async () => {
      const reply = await client.retrieval.query({
        target: { case: "agentId", value: state.agentId },
        query: { case: "text", value: "vector search in a database" },
      });
      assert.equal(reply.hits[0].externalId, "pg");
      assert.ok(reply.hits[0].score > 0.2);
      assert.equal(reply.datastores[0].datastoreId, state.datastoreId);
      assert.ok(reply.hits.length <= 3);
    });

    test("a filtered query", async () => {
      const reply = await client.retrieval.query({
        target: { case: "datastores", value: { ids: [state.datastoreId] } },
        query: { case: "text", value: "vector search in a database" },
        filter: { topic: "pets" },
        similarityThreshold: 0,
      });
      assert.ok(reply.hits.length > 0);
      for (const hit of reply.hits) {
        assert.equal(hit.metadata.topic, "pets");
      }
    });

    test("INVALID_ARGUMENT", async () => {
      assert.equal(await codeOf(client.datastores.getDatastore({ id: "nope" })), Code.InvalidArgument);
    });

    test("NOT_FOUND", async () => {
      const id = "00000000-0000-0000-0000-000000000000";
      assert.equal(await codeOf(client.datastores.getDatastore({ id })), Code.NotFound);
    });

    test("PERMISSION_DENIED", async () => {
      const other = createRetrievalClient({ ...wire, apiKey: OTHER_KEY });
      const call = other.datastores.getDatastore({ id: state.datastoreId });
      assert.equal(await codeOf(call), Code.PermissionDenied);
    });

    test("UNAUTHENTICATED", async () => {
      const stranger = createRetrievalClient({ ...wire, apiKey: "agr_not_a_key" });
      assert.equal(await codeOf(stranger.datastores.listDatastores({})), Code.Unauthenticated);
      const anonymous = createRetrievalClient({ ...wire });
      assert.equal(await codeOf(anonymous.datastores.listDatastores({})), Code.Unauthenticated);
    });
  });
}
