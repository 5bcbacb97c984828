/**
 * Agentopia Retrieval client: the four services over Connect (JSON or binary),
 * gRPC-Web, or native gRPC, with the API key or access token attached.
 *
 * "connect" and "grpc-web" use `fetch` only, so they run on Node >= 18, Deno,
 * Supabase Edge Functions and browsers. "grpc" needs HTTP/2 with trailers and
 * runs on Node only, through @connectrpc/connect-node (loaded on first use).
 */
import { createClient } from "@connectrpc/connect";
import type { Client, Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  AgentService,
  DatastoreService,
  IngestService,
  RetrievalService,
} from "./gen/agentopia/retrieval/v1/retrieval_pb.ts";

export * from "./gen/agentopia/retrieval/v1/retrieval_pb.ts";
export { Code, ConnectError } from "@connectrpc/connect";

export type Protocol = "connect" | "grpc-web" | "grpc";

export interface RetrievalClientOptions {
  /** The HTTP port for "connect" / "grpc-web" (http://127.0.0.1:8080), the gRPC port for "grpc". */
  baseUrl: string;
  /** A fixed credential: an API key (agr_...) or a Supabase access token. */
  apiKey?: string;
  /** Called before every call for a fresh credential (e.g. the caller's Supabase JWT). */
  getToken?: () => string | Promise<string>;
  /** Wire protocol; default "connect". */
  protocol?: Protocol;
  /** Connect only: binary protobuf instead of JSON (default false: JSON). */
  binary?: boolean;
  /** Default deadline of every call, in milliseconds (sent as the call's timeout). */
  timeoutMs?: number;
  /** Custom fetch (Connect and gRPC-Web), e.g. to add TLS settings or tracing. */
  fetch?: typeof globalThis.fetch;
  /** Extra interceptors, run after the one that sets `authorization`. */
  interceptors?: Interceptor[];
}

export interface RetrievalClient {
  datastores: Client<typeof DatastoreService>;
  agents: Client<typeof AgentService>;
  ingest: Client<typeof IngestService>;
  retrieval: Client<typeof RetrievalService>;
}

/** Typed clients for the four services over one transport. */
export function createRetrievalClient(options: RetrievalClientOptions): RetrievalClient {
  const transport = createTransport(options);
  return {
    datastores: createClient(DatastoreService, transport),
    agents: createClient(AgentService, transport),
    ingest: createClient(IngestService, transport),
    retrieval: createClient(RetrievalService, transport),
  };
}

/** The transport createRetrievalClient uses (for callers building their own clients). */
export function createTransport(options: RetrievalClientOptions): Transport {
  if (options.apiKey !== undefined && options.getToken !== undefined) {
    throw new Error("pass apiKey or getToken, not both");
  }
  const interceptors = [bearer(options), ...(options.interceptors ?? [])];
  const common = {
    baseUrl: options.baseUrl,
    interceptors,
    defaultTimeoutMs: options.timeoutMs,
  };
  switch (options.protocol ?? "connect") {
    case "connect":
      return createConnectTransport({
        ...common,
        useBinaryFormat: options.binary ?? false,
        fetch: options.fetch,
      });
    case "grpc-web":
      return createGrpcWebTransport({ ...common, useBinaryFormat: true, fetch: options.fetch });
    case "grpc":
      return lazyGrpcTransport(common);
    default:
      throw new Error(`unknown protocol ${String(options.protocol)}`);
  }
}

function bearer(options: RetrievalClientOptions): Interceptor {
  return (next) => async (req) => {
    const token = options.getToken ? await options.getToken() : options.apiKey;
    if (token) {
      req.header.set("authorization", `Bearer ${token}`);
    }
    return await next(req);
  };
}

interface GrpcOptions {
  baseUrl: string;
  interceptors: Interceptor[];
  defaultTimeoutMs?: number;
}

// A variable specifier keeps bundlers, Deno and browsers from loading the Node-only
// module unless "grpc" is actually used.
const CONNECT_NODE = "@connectrpc/connect-node";

function lazyGrpcTransport(options: GrpcOptions): Transport {
  let transport: Promise<Transport> | undefined;
  const get = (): Promise<Transport> => {
    transport ??= import(CONNECT_NODE).then(
      (m: { createGrpcTransport: (o: object) => Transport }) =>
        m.createGrpcTransport({ ...options, httpVersion: "2" }),
    );
    return transport;
  };
  return {
    unary: async (...args) => (await get()).unary(...args),
    stream: async (...args) => (await get()).stream(...args),
  };
}
