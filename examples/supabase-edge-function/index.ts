// Supabase Edge Function: an agent's datastore context from Agentopia Retrieval.
// Deploy next to Agentopia's functions (see README.md); locally:
//   deno run --allow-net --allow-env --config deno.json index.ts
import { configFromEnv, createHandler } from "./handler.ts";

const handler = createHandler(configFromEnv(Deno.env));
const port = Number(Deno.env.get("PORT") ?? "8000");
Deno.serve({ port, hostname: Deno.env.get("HOSTNAME") ?? "127.0.0.1" }, handler);
