// POST {"agentId" | "agent_id", "message"} -> {"context", "memories", "datastores"}.
import {
  Code,
  ConnectError,
  createRetrievalClient,
  type Protocol,
  SimilarityMetric,
} from "@agentopia/retrieval-client";
import { DEFAULT_PREVIEW_LENGTH, formatContext, toMemory } from "./context.ts";

export interface Config {
  /** The service's HTTP port, e.g. https://retrieval.internal:8080. */
  retrievalUrl: string;
  /** Forward the caller's Supabase JWT (the service verifies it) instead of apiKey. */
  useCallerJwt: boolean;
  /** The service API key (a `service` role key) when not forwarding JWTs. */
  apiKey: string | undefined;
  protocol: Protocol;
  previewLength: number;
  timeoutMs: number;
}

export function configFromEnv(env: { get(name: string): string | undefined }): Config {
  const previewLength = Number(env.get("RETRIEVAL_PREVIEW_LENGTH") ?? DEFAULT_PREVIEW_LENGTH);
  const retrievalUrl = env.get("RETRIEVAL_URL");
  if (!retrievalUrl) throw new Error("RETRIEVAL_URL is not set");
  const useCallerJwt = env.get("RETRIEVAL_AUTH") === "supabase-jwt";
  const apiKey = env.get("RETRIEVAL_API_KEY");
  if (!useCallerJwt && !apiKey) throw new Error("RETRIEVAL_API_KEY is not set");
  return {
    retrievalUrl,
    useCallerJwt,
    apiKey,
    protocol: (env.get("RETRIEVAL_PROTOCOL") ?? "connect") as Protocol,
    previewLength: Number.isInteger(previewLength) && previewLength > 0
      ? previewLength
      : DEFAULT_PREVIEW_LENGTH,
    timeoutMs: Number(env.get("RETRIEVAL_TIMEOUT_MS") ?? 10_000),
  };
}

const HTTP_STATUS: Partial<Record<Code, number>> = {
  [Code.InvalidArgument]: 400,
  [Code.Unauthenticated]: 401,
  [Code.PermissionDenied]: 403,
  [Code.NotFound]: 404,
  [Code.FailedPrecondition]: 412,
  [Code.ResourceExhausted]: 429,
  [Code.Unavailable]: 503,
  [Code.DeadlineExceeded]: 504,
};

export function createHandler(config: Config): (req: Request) => Promise<Response> {
  // One client for the API-key mode; per request when forwarding the caller's JWT.
  const shared = config.useCallerJwt ? undefined : client(config, config.apiKey);
  return async (req: Request): Promise<Response> => {
    if (req.method !== "POST") return json({ error: "POST a JSON body" }, 405);
    let body: Record<string, unknown>;
    try {
      body = await req.json();
    } catch {
      return json({ error: "the body must be JSON" }, 400);
    }
    const agentId = body.agentId ?? body.agent_id;
    const message = body.message;
    if (typeof agentId !== "string" || typeof message !== "string" || !message.trim()) {
      return json({ error: "agentId and message (non-empty strings) are required" }, 400);
    }
    const retrieval = shared ?? client(config, callerJwt(req));
    try {
      const reply = await retrieval.retrieval.query({
        target: { case: "agentId", value: agentId },
        query: { case: "text", value: message },
      });
      const memories = reply.hits.map((h) => toMemory(h, config.previewLength));
      return json({
        context: formatContext(memories),
        memories,
        datastores: reply.datastores.map((d) => ({
          datastoreId: d.datastoreId,
          similarityMetric: SimilarityMetric[d.similarityMetric].toLowerCase(),
          similarityThreshold: d.similarityThreshold,
          maxResults: d.maxResults,
          hitCount: d.hitCount,
          fallback: d.fallback,
        })),
      });
    } catch (e) {
      const err = ConnectError.from(e);
      return json({ error: err.rawMessage, code: Code[err.code] }, HTTP_STATUS[err.code] ?? 502);
    }
  };
}

function client(config: Config, credential: string | undefined) {
  return createRetrievalClient({
    baseUrl: config.retrievalUrl,
    apiKey: credential,
    protocol: config.protocol,
    timeoutMs: config.timeoutMs,
  });
}

function callerJwt(req: Request): string | undefined {
  const header = req.headers.get("authorization") ?? "";
  const [scheme, token] = header.split(" ", 2);
  return scheme?.toLowerCase() === "bearer" && token ? token : undefined;
}

function json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json" },
  });
}
