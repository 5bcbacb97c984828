-- Chunks leave with their document through a trigger, not a foreign key.
--
-- The foreign key datastore_chunks.document_id -> datastore_documents ON DELETE
-- CASCADE made PostgreSQL run `DELETE FROM datastore_chunks WHERE $1 = document_id`
-- on the partitioned parent for every deleted document: no datastore id prunes that
-- statement, so it opened and locked every partition and its indexes (~7 relations per
-- datastore). At 5,188 datastores one DeleteDocuments overflowed the shared lock table
-- ("out of shared memory"); so did DeleteDatastore and a DELETE of a datastore row by
-- SQL (datastores -> datastore_documents cascade -> chunks). docs/scale.md.
--
-- Instead, a statement-level trigger on datastore_documents deletes the chunks of the
-- deleted rows, one statement per datastore, with the datastore id and document ids
-- written as literals (EXECUTE format %L): each statement is planned for its values and
-- pruned at plan time to that datastore's partition. A parameterised statement would
-- get a generic plan that locks every partition again.
--
-- Upgrade cost: dropping the foreign key locks every partition once, here, in this
-- migration's transaction: an install with N datastores needs room for ~7 N locks
-- (max_locks_per_transaction x max_connections); docs/scale.md.

CREATE FUNCTION public.datastore_documents_delete_chunks() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    ds uuid;
    docs uuid[];
    i integer;
BEGIN
    FOR ds, docs IN
        SELECT o.datastore_id, array_agg(o.id ORDER BY o.id)
        FROM old_documents o GROUP BY o.datastore_id ORDER BY o.datastore_id
    LOOP
        -- Slices bound the statement's text (a datastore deleted by SQL may have many).
        FOR i IN 1 .. cardinality(docs) BY 10000 LOOP
            EXECUTE format(
                'DELETE FROM public.datastore_chunks'
                ' WHERE datastore_id = %L::uuid AND document_id = ANY (%L::uuid[])',
                ds, docs[i : i + 9999]);
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER datastore_documents_delete_chunks AFTER DELETE ON public.datastore_documents
    REFERENCING OLD TABLE AS old_documents FOR EACH STATEMENT
    EXECUTE FUNCTION public.datastore_documents_delete_chunks();

-- TRUNCATE fires no DELETE trigger: with the foreign key, truncating the documents
-- needed CASCADE (TRUNCATE datastores CASCADE reached the chunks too); now the chunks
-- follow. Every document is gone, so every chunk goes (the partitions' TRUNCATE
-- triggers reset the keyword statistics).
CREATE FUNCTION public.datastore_documents_truncate_chunks() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE public.datastore_chunks;
    RETURN NULL;
END
$$;

CREATE TRIGGER datastore_documents_truncate_chunks AFTER TRUNCATE ON public.datastore_documents
    FOR EACH STATEMENT EXECUTE FUNCTION public.datastore_documents_truncate_chunks();

-- The parent's foreign key (its partitions' copies go with it), then those of tables
-- not attached yet: a re-embedding's shadow (datastore_chunks_<hex>_next).
DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT c.conrelid::regclass AS tbl, c.conname
        FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
        WHERE c.contype = 'f' AND c.confrelid = 'public.datastore_documents'::regclass
          AND c.conparentid = 0 AND r.relnamespace = 'public'::regnamespace
          AND r.relname LIKE 'datastore\_chunks%'
        ORDER BY r.relkind = 'p' DESC, 1
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tbl, fk.conname);
    END LOOP;
END
$$;
