// The context block Agentopia's chat function puts in front of the model, built from this
// service's hits as supabase/functions/chat/vector_search.ts builds it from Pinecone's.
import type { Hit } from "@agentopia/retrieval-client";

export const DEFAULT_PREVIEW_LENGTH = 400;

export interface Memory {
  datastoreId: string;
  externalId: string;
  chunkId: string;
  title: string;
  source: string | undefined;
  score: number;
  distance: number;
  lowConfidence: boolean;
  preview: string;
}

/** A hit as the function returns it: `preview` cut to `previewLength` characters. */
export function toMemory(hit: Hit, previewLength: number): Memory {
  const source = hit.metadata?.source;
  return {
    datastoreId: hit.datastoreId,
    externalId: hit.externalId,
    chunkId: hit.chunkId.toString(),
    title: hit.title,
    source: typeof source === "string" ? source : undefined,
    score: hit.score,
    distance: hit.distance,
    lowConfidence: hit.belowThreshold,
    preview: cut(hit.content, previewLength),
  };
}

/** The context block, or null when there is nothing to add (as vector_search.ts returns). */
export function formatContext(memories: Memory[]): string | null {
  if (memories.length === 0) {
    return null;
  }
  const blocks = memories.map((m) => {
    const label = m.lowConfidence ? "Memory (low confidence" : "Memory (";
    const similarity = `similarity: ${(m.score * 100).toFixed(1)}%`;
    let block = `${label}${m.lowConfidence ? ", " : ""}${similarity}):\n${m.preview}`;
    if (m.title) block += `\nTitle: ${m.title}`;
    if (m.source) block += `\nSource: ${m.source}`;
    return block;
  });
  const onlyLow = memories.every((m) => m.lowConfidence);
  const intro = onlyLow
    ? "No memories passed the similarity threshold; these are the closest matches, with low " +
      "confidence. Use them only if they clearly apply:"
    : "Here are some relevant memories that might help with your response:";
  return `${intro}\n\n${blocks.join("\n\n")}\n\nPlease consider these memories when ` +
    "formulating your response, but maintain a natural conversation flow.";
}

function cut(text: string, length: number): string {
  const chars = Array.from(text); // whole code points, never half a surrogate pair
  return chars.length <= length ? text : `${chars.slice(0, length).join("")}…`;
}
