-- Empty chunk partitions made ahead of need (service/storage/partitions.py). Creating
-- a partition rebuilds the parent's partition descriptor, which grows with the number
-- of datastores (about 2 ms at 10 datastores, 10-25 ms at 5,000): the service keeps a
-- few partitions ready, attached under a fresh id, and CreateDatastore gives its new
-- datastore one of those ids, so that no DDL on the parent runs while a caller waits.
-- A row here is a partition no datastore owns yet; claiming deletes the row in the
-- creating transaction.
CREATE TABLE public.datastore_spare_partitions (
    datastore_id uuid PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
