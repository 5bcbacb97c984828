-- Announce changes to the rows that service replicas cache (datastore settings,
-- agent links, API keys), so every replica drops its cached copies at commit.
CREATE OR REPLACE FUNCTION public.retrieval_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('retrieval_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER retrieval_datastores_changed
    AFTER UPDATE OR DELETE OR TRUNCATE ON public.datastores
    FOR EACH STATEMENT EXECUTE FUNCTION public.retrieval_notify_change();
CREATE TRIGGER retrieval_agents_changed
    AFTER UPDATE OR DELETE OR TRUNCATE ON public.agents
    FOR EACH STATEMENT EXECUTE FUNCTION public.retrieval_notify_change();
CREATE TRIGGER retrieval_agent_datastores_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.agent_datastores
    FOR EACH STATEMENT EXECUTE FUNCTION public.retrieval_notify_change();
CREATE TRIGGER retrieval_api_keys_changed
    AFTER UPDATE OR DELETE OR TRUNCATE ON public.retrieval_api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION public.retrieval_notify_change();
