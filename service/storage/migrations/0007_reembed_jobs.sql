-- Re-embedding jobs: one row per datastore (the latest job), so a job survives a
-- restart and every replica can report its progress. While a job runs, the new
-- vectors go into a shadow table (public.datastore_chunks_<hex>_next, created and
-- swapped in by the service); this row records what it is building.
CREATE TABLE public.datastore_reembed_jobs (
    datastore_id uuid PRIMARY KEY REFERENCES public.datastores (id) ON DELETE CASCADE,
    state text NOT NULL
        CHECK (state IN ('copying', 'indexing', 'switching', 'done', 'failed', 'cancelled')),
    source_model text NOT NULL,
    source_dimensions integer NOT NULL,
    target_model text NOT NULL,
    target_dimensions integer NOT NULL CHECK (target_dimensions > 0),
    chunks_done bigint NOT NULL DEFAULT 0,
    chunks_total bigint NOT NULL DEFAULT 0,
    error text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
