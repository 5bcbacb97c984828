-- Keyword search with BM25 ranking.
--
-- Every chunk gets a generated tsvector (`tsv`, in its datastore's text search
-- configuration: English unless the datastore says otherwise) and its token count
-- (`tsv_length`, the number of lexeme positions), a GIN index in each partition,
-- and per-datastore BM25 statistics (chunk count, total tokens, and the chunk
-- frequency of every lexeme) kept exact by statement-level triggers, so every
-- write path (COPY, DELETE, UPDATE, cascades) maintains them.
--
-- The keyword index covers the first 200,000 characters of a chunk: a tsvector
-- cannot exceed 1 MB, and a longer chunk would fail to insert.

CREATE FUNCTION public.retrieval_tsvector_length(tsvector) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (
        SELECT coalesce(sum(coalesce(array_length(u.positions, 1), 1)), 0)::integer
        FROM unnest($1) AS u
    );

ALTER TABLE public.datastore_chunks
    ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
        to_tsvector('english'::regconfig, left(content, 200000))) STORED,
    ADD COLUMN tsv_length integer GENERATED ALWAYS AS (
        public.retrieval_tsvector_length(to_tsvector('english'::regconfig, left(content, 200000))))
        STORED;

CREATE TABLE public.datastore_keyword_stats (
    datastore_id uuid PRIMARY KEY REFERENCES public.datastores (id) ON DELETE CASCADE,
    chunk_count bigint NOT NULL DEFAULT 0,
    token_count bigint NOT NULL DEFAULT 0
);

CREATE TABLE public.datastore_keyword_terms (
    datastore_id uuid NOT NULL REFERENCES public.datastores (id) ON DELETE CASCADE,
    lexeme text COLLATE "C" NOT NULL,
    chunk_freq bigint NOT NULL,
    PRIMARY KEY (datastore_id, lexeme)
);

-- Statistics deltas. Every writer updates the datastore's stats row first, so
-- concurrent writers of one datastore queue there instead of deadlocking on terms.
CREATE FUNCTION public.datastore_keyword_add_chunks() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.datastore_keyword_stats AS s (datastore_id, chunk_count, token_count)
    SELECT n.datastore_id, count(*), coalesce(sum(n.tsv_length), 0)
    FROM new_chunks n GROUP BY n.datastore_id ORDER BY n.datastore_id
    ON CONFLICT (datastore_id) DO UPDATE
        SET chunk_count = s.chunk_count + excluded.chunk_count,
            token_count = s.token_count + excluded.token_count;
    INSERT INTO public.datastore_keyword_terms AS t (datastore_id, lexeme, chunk_freq)
    SELECT n.datastore_id, u.lexeme, count(*)
    FROM new_chunks n CROSS JOIN LATERAL unnest(tsvector_to_array(n.tsv)) AS u (lexeme)
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (datastore_id, lexeme) DO UPDATE
        SET chunk_freq = t.chunk_freq + excluded.chunk_freq;
    RETURN NULL;
END
$$;

CREATE FUNCTION public.datastore_keyword_remove_chunks() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.datastore_keyword_stats AS s
    SET chunk_count = s.chunk_count - o.n, token_count = s.token_count - o.tokens
    FROM (
        SELECT datastore_id, count(*) AS n, coalesce(sum(tsv_length), 0) AS tokens
        FROM old_chunks GROUP BY datastore_id
    ) AS o
    WHERE s.datastore_id = o.datastore_id;
    -- Lexemes whose last chunk went are deleted; the others are decremented.
    WITH o AS MATERIALIZED (
        SELECT c.datastore_id, u.lexeme, count(*) AS n
        FROM old_chunks c CROSS JOIN LATERAL unnest(tsvector_to_array(c.tsv)) AS u (lexeme)
        GROUP BY 1, 2
    ), gone AS (
        DELETE FROM public.datastore_keyword_terms AS t USING o
        WHERE t.datastore_id = o.datastore_id AND t.lexeme = o.lexeme AND t.chunk_freq <= o.n
    )
    UPDATE public.datastore_keyword_terms AS t SET chunk_freq = t.chunk_freq - o.n
    FROM o
    WHERE t.datastore_id = o.datastore_id AND t.lexeme = o.lexeme AND t.chunk_freq > o.n;
    RETURN NULL;
END
$$;

-- TRUNCATE of one partition (the trigger's argument is its datastore id).
CREATE FUNCTION public.datastore_keyword_reset() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM public.datastore_keyword_terms WHERE datastore_id = TG_ARGV[0]::uuid;
    UPDATE public.datastore_keyword_stats SET chunk_count = 0, token_count = 0
    WHERE datastore_id = TG_ARGV[0]::uuid;
    RETURN NULL;
END
$$;

-- Recompute one datastore's statistics from its chunks (after a rewrite that fires
-- no triggers, such as a change of text search configuration).
CREATE FUNCTION public.datastore_keyword_rebuild(ds uuid) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM public.datastore_keyword_terms WHERE datastore_id = ds;
    INSERT INTO public.datastore_keyword_stats AS s (datastore_id, chunk_count, token_count)
    SELECT ds, count(*), coalesce(sum(c.tsv_length), 0)
    FROM public.datastore_chunks c WHERE c.datastore_id = ds
    ON CONFLICT (datastore_id) DO UPDATE
        SET chunk_count = excluded.chunk_count, token_count = excluded.token_count;
    INSERT INTO public.datastore_keyword_terms (datastore_id, lexeme, chunk_freq)
    SELECT ds, u.lexeme, count(*)
    FROM public.datastore_chunks c CROSS JOIN LATERAL unnest(tsvector_to_array(c.tsv)) AS u (lexeme)
    WHERE c.datastore_id = ds
    GROUP BY u.lexeme;
END
$$;

-- A partition's GIN index and statistics triggers (the service calls this when it
-- creates one). Statement-level triggers are not inherited by partitions, so each
-- gets its own, and the parent a set for statements that name it. The GIN index is
-- the partition's own rather than part of a partitioned index, so that a change of
-- text search configuration can rewrite one partition.
CREATE FUNCTION public.datastore_keyword_install(part regclass, ds uuid) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF ds IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON %s USING gin (tsv)',
            (SELECT c.relname || '_tsv_idx' FROM pg_catalog.pg_class c WHERE c.oid = part),
            part);
    END IF;
    EXECUTE format(
        'CREATE TRIGGER keyword_stats_insert AFTER INSERT ON %s'
        ' REFERENCING NEW TABLE AS new_chunks FOR EACH STATEMENT'
        ' EXECUTE FUNCTION public.datastore_keyword_add_chunks()', part);
    EXECUTE format(
        'CREATE TRIGGER keyword_stats_delete AFTER DELETE ON %s'
        ' REFERENCING OLD TABLE AS old_chunks FOR EACH STATEMENT'
        ' EXECUTE FUNCTION public.datastore_keyword_remove_chunks()', part);
    EXECUTE format(
        'CREATE TRIGGER keyword_stats_update_old AFTER UPDATE ON %s'
        ' REFERENCING OLD TABLE AS old_chunks FOR EACH STATEMENT'
        ' EXECUTE FUNCTION public.datastore_keyword_remove_chunks()', part);
    EXECUTE format(
        'CREATE TRIGGER keyword_stats_update_new AFTER UPDATE ON %s'
        ' REFERENCING NEW TABLE AS new_chunks FOR EACH STATEMENT'
        ' EXECUTE FUNCTION public.datastore_keyword_add_chunks()', part);
    IF ds IS NOT NULL THEN
        EXECUTE format(
            'CREATE TRIGGER keyword_stats_truncate AFTER TRUNCATE ON %s'
            ' FOR EACH STATEMENT EXECUTE FUNCTION public.datastore_keyword_reset(%L)',
            part, ds);
        INSERT INTO public.datastore_keyword_stats (datastore_id) VALUES (ds)
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- Point a partition at another text search configuration: rewrites its tsvectors
-- (and GIN index) and recomputes the datastore's statistics.
CREATE FUNCTION public.datastore_keyword_configure(part regclass, ds uuid, cfg regconfig)
    RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'ALTER TABLE %s'
        ' ALTER COLUMN tsv SET EXPRESSION AS (to_tsvector(%s::oid::regconfig, left(content, 200000))),'
        ' ALTER COLUMN tsv_length SET EXPRESSION AS (public.retrieval_tsvector_length('
        'to_tsvector(%s::oid::regconfig, left(content, 200000))))',
        part, cfg::oid, cfg::oid);
    PERFORM public.datastore_keyword_rebuild(ds);
END
$$;

SELECT public.datastore_keyword_install('public.datastore_chunks'::regclass, NULL);

-- Existing datastores: triggers on their partitions, statistics from their chunks.
DO $$
DECLARE
    part regclass;
    ds uuid;
BEGIN
    FOR part IN
        SELECT i.inhrelid::regclass FROM pg_inherits i
        WHERE i.inhparent = 'public.datastore_chunks'::regclass
    LOOP
        ds := substring(part::text FROM 'datastore_chunks_([0-9a-f]{32})$')::uuid;
        IF ds IS NOT NULL AND EXISTS (SELECT 1 FROM public.datastores d WHERE d.id = ds) THEN
            PERFORM public.datastore_keyword_install(part, ds);
            PERFORM public.datastore_keyword_rebuild(ds);
        END IF;
    END LOOP;
END
$$;
