-- API keys may expire (create-key --expires-in); NULL = never.
ALTER TABLE public.retrieval_api_keys ADD COLUMN IF NOT EXISTS expires_at timestamptz;

-- New keys are announced too, so every replica forgets that it saw the key as unknown
-- (unknown keys are remembered for a few seconds: see service/core/lookup_cache.py).
DROP TRIGGER IF EXISTS retrieval_api_keys_changed ON public.retrieval_api_keys;
CREATE TRIGGER retrieval_api_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.retrieval_api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION public.retrieval_notify_change();
