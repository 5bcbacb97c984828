-- Agentopia's tables (created only when absent, so the service can share an
-- existing Agentopia/Supabase database) plus the service's own tables.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE IF NOT EXISTS auth.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.agents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    name text NOT NULL,
    description text,
    system_instructions text,
    assistant_instructions text,
    active boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS agents_user_id_idx ON public.agents (user_id, created_at, id);

CREATE TABLE IF NOT EXISTS public.datastores (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    name text NOT NULL,
    description text,
    type text NOT NULL DEFAULT 'pgvector'
        CHECK (type IN ('pgvector', 'pinecone', 'getzep')),
    config jsonb NOT NULL DEFAULT '{}'::jsonb,
    similarity_metric text NOT NULL DEFAULT 'cosine'
        CHECK (similarity_metric IN ('cosine', 'euclidean', 'dot', 'manhattan')),
    similarity_threshold real NOT NULL DEFAULT 0.5
        CHECK (similarity_threshold >= 0 AND similarity_threshold <= 1),
    max_results integer NOT NULL DEFAULT 5 CHECK (max_results > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS datastores_user_id_idx ON public.datastores (user_id, created_at, id);

CREATE TABLE IF NOT EXISTS public.agent_datastores (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id uuid NOT NULL REFERENCES public.agents (id) ON DELETE CASCADE,
    datastore_id uuid NOT NULL REFERENCES public.datastores (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, datastore_id)
);
CREATE INDEX IF NOT EXISTS agent_datastores_datastore_idx ON public.agent_datastores (datastore_id);

CREATE TABLE public.datastore_documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    datastore_id uuid NOT NULL REFERENCES public.datastores (id) ON DELETE CASCADE,
    external_id text NOT NULL,
    title text NOT NULL DEFAULT '',
    source text NOT NULL DEFAULT '',
    content_sha256 text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    chunk_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (datastore_id, external_id)
);

-- One LIST partition per datastore, each with its own HNSW index built for the
-- datastore's dimensions and metric (created by the service with the datastore).
CREATE SEQUENCE public.datastore_chunks_id_seq AS bigint;
CREATE TABLE public.datastore_chunks (
    id bigint NOT NULL DEFAULT nextval('public.datastore_chunks_id_seq'),
    datastore_id uuid NOT NULL,
    document_id uuid NOT NULL REFERENCES public.datastore_documents (id) ON DELETE CASCADE,
    chunk_index integer NOT NULL,
    content text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    embedding vector NOT NULL,
    token_count integer NOT NULL DEFAULT 0,
    PRIMARY KEY (datastore_id, id)
) PARTITION BY LIST (datastore_id);
ALTER SEQUENCE public.datastore_chunks_id_seq OWNED BY public.datastore_chunks.id;
CREATE INDEX datastore_chunks_document_idx ON public.datastore_chunks (datastore_id, document_id);

CREATE TABLE public.retrieval_api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    name text NOT NULL DEFAULT '',
    prefix text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    role text NOT NULL CHECK (role IN ('user', 'service')),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
