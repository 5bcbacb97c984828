"""SQL for tests/test_supabase_privileges.py: Supabase's setup, catalog queries, and
Agentopia's tables as its Supabase project holds them."""

# Supabase's setup (supabase/realtime dev/postgres/00-setup.sql, and the platform's).
SUPABASE_SETUP = """
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
    GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""

# Every relation and function in the schemas the migrations write, except pgvector's.
CATALOG_RELATIONS = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('public', 'auth') AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass
                  AND e.objid = c.oid AND e.deptype = 'e')
ORDER BY 1
"""
CATALOG_FUNCTIONS = """
SELECT p.oid, format('%I.%I', n.nspname, p.proname),
       ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t),
       p.prorettype = 'trigger'::regtype
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public'
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass
                  AND e.objid = p.oid AND e.deptype = 'e')
ORDER BY 2
"""


# Agentopia's tables as its Supabase project holds them (RLS on, its own policies).
AGENTOPIA_SCHEMA = """
CREATE SCHEMA auth;
CREATE TABLE auth.users (id uuid PRIMARY KEY, aud text, instance_id uuid);
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
    AS $$SELECT 'agentopia'::text::uuid$$;
CREATE TABLE public.agents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid REFERENCES auth.users,
    name text NOT NULL, description text, system_instructions text,
    assistant_instructions text, discord_channel text, active boolean DEFAULT false,
    created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now());
ALTER TABLE public.agents ENABLE ROW LEVEL SECURITY;
CREATE POLICY "agentopia agents" ON public.agents USING (user_id = auth.uid());
CREATE TABLE public.datastores (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid REFERENCES auth.users,
    name text NOT NULL, description text, type text NOT NULL DEFAULT 'pgvector',
    config jsonb NOT NULL DEFAULT '{}', similarity_metric text NOT NULL DEFAULT 'cosine',
    similarity_threshold real NOT NULL DEFAULT 0.5, max_results integer NOT NULL DEFAULT 5,
    created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now());
ALTER TABLE public.datastores ENABLE ROW LEVEL SECURITY;
CREATE POLICY "agentopia datastores" ON public.datastores USING (user_id = auth.uid());
CREATE TABLE public.agent_datastores (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id uuid NOT NULL REFERENCES public.agents ON DELETE CASCADE,
    datastore_id uuid NOT NULL REFERENCES public.datastores ON DELETE CASCADE,
    created_at timestamptz DEFAULT now(), UNIQUE (agent_id, datastore_id));
ALTER TABLE public.agent_datastores ENABLE ROW LEVEL SECURITY;
CREATE POLICY "agentopia links" ON public.agent_datastores USING (
    EXISTS (SELECT 1 FROM public.agents a WHERE a.id = agent_id AND a.user_id = auth.uid()));
"""
