-- Agentopia's tables, when the service made them, get Agentopia's owner-only row level
-- security (docs/security.md). The service's own tables are locked down separately,
-- after every migrate (service/storage/privileges.py), so later tables are covered too.
--
-- Which tables are the service's: Agentopia's schema enables RLS on agents, datastores
-- and agent_datastores, so a table with RLS off and no policy was made by this
-- service's 0001 (standalone, or a Supabase project without Agentopia). It is then
-- open to Supabase's Data API whoever made it, and gets the same owner-only rules.
-- A table with RLS on or any policy is Agentopia's (or the operator's): left untouched.
-- The policies name no role (a database without Supabase's roles has no
-- `authenticated`): auth.uid() is NULL for anon, so anon matches no row. The service
-- itself connects as the tables' owner (or BYPASSRLS), which RLS does not restrict.

-- Supabase's auth.uid(): the `sub` claim of the caller's JWT, set by its Data API.
-- Standalone, the service made auth.users itself: no Data API role may read it, and
-- those roles may use the schema (for auth.uid() in policies), as in Supabase.
DO $$
DECLARE
    api_role text;
BEGIN
    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid
            LANGUAGE sql STABLE
            AS $f$
                SELECT coalesce(
                    nullif(current_setting('request.jwt.claim.sub', true), ''),
                    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
                )::uuid
            $f$;
        ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
        REVOKE ALL ON TABLE auth.users FROM PUBLIC;
        FOR api_role IN
            SELECT rolname FROM pg_catalog.pg_roles
            WHERE rolname IN ('anon', 'authenticated', 'service_role')
        LOOP
            EXECUTE format('REVOKE ALL ON TABLE auth.users FROM %I', api_role);
            EXECUTE format('GRANT USAGE ON SCHEMA auth TO %I', api_role);
        END LOOP;
    END IF;
END
$$;

CREATE FUNCTION pg_temp.retrieval_is_unguarded(tbl regclass) RETURNS boolean
    LANGUAGE sql STABLE
    RETURN NOT (SELECT c.relrowsecurity FROM pg_catalog.pg_class c WHERE c.oid = tbl)
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = tbl);

DO $$
BEGIN
    IF pg_temp.retrieval_is_unguarded('public.agents') THEN
        ALTER TABLE public.agents ENABLE ROW LEVEL SECURITY;
        CREATE POLICY "Users manage their own agents" ON public.agents
            USING (user_id = auth.uid())
            WITH CHECK (user_id = auth.uid());
    END IF;
    IF pg_temp.retrieval_is_unguarded('public.datastores') THEN
        ALTER TABLE public.datastores ENABLE ROW LEVEL SECURITY;
        CREATE POLICY "Users manage their own datastores" ON public.datastores
            USING (user_id = auth.uid())
            WITH CHECK (user_id = auth.uid());
    END IF;
    -- Stricter than Agentopia's (which checks only the agent): both ends must be the
    -- caller's, the service's isolation rule for agent links.
    IF pg_temp.retrieval_is_unguarded('public.agent_datastores') THEN
        ALTER TABLE public.agent_datastores ENABLE ROW LEVEL SECURITY;
        CREATE POLICY "Users link their own agents to their own datastores"
            ON public.agent_datastores
            USING (
                EXISTS (SELECT 1 FROM public.agents a
                        WHERE a.id = agent_id AND a.user_id = auth.uid())
                AND EXISTS (SELECT 1 FROM public.datastores d
                            WHERE d.id = datastore_id AND d.user_id = auth.uid()))
            WITH CHECK (
                EXISTS (SELECT 1 FROM public.agents a
                        WHERE a.id = agent_id AND a.user_id = auth.uid())
                AND EXISTS (SELECT 1 FROM public.datastores d
                            WHERE d.id = datastore_id AND d.user_id = auth.uid()));
    END IF;
END
$$;
