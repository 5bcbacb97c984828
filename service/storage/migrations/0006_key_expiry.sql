-- API keys may expire (create-key --expires-in); NULL = never.
ALTER TABLE public.retrieval_api_keys ADD COLUMN IF NOT EXISTS expires_at timestamptz;
