-- GIN expression indexes that let PostgreSQL serve FerretDB 1.x's keyed queries.
-- Installed into the stack's `ferretdb` database by scripts/stack.sh (as the superuser,
-- through devtools/ferretdb_indexes.py); idempotent, re-run on every `up`. Local stack only:
-- the product never sees these indexes (FerretDB lists only the indexes in its metadata).
--
-- Why: FerretDB 1.24 (internal/backends/postgresql/query.go, filterEqual) pushes an equality
-- filter down as `_jsonb -> 'field' @> '"value"'` (a dotted field as `_jsonb #> '{a,b}' @> ...`,
-- update/delete only), and its own indexes are btree indexes on `((_jsonb -> 'field'))`,
-- which cannot serve `@>`: every query is a sequential scan. A GIN index on the very
-- expression FerretDB filters on serves `@>` (docs/MONGODB.md, "Index-backed keyed queries").
--
-- How: for every field of every index a FerretDB collection declares (its metadata row in
-- <database>._ferretdb_database_metadata: {"table": ..., "indexes": [{"key": {field: 1}}]}),
-- one GIN index on FerretDB's pushdown expression for that field. An AFTER INSERT OR UPDATE
-- row trigger on each metadata table keeps them in step with createIndexes / dropIndexes /
-- create collection (FerretDB rewrites the row after each); an event trigger attaches that
-- row trigger to the metadata table of every FerretDB database created later (the tests'
-- per-session databases); sync_all() catches up on databases that existed before.
-- Dropping a collection or database drops its table or schema, and the GIN indexes with it.
--
-- `fastupdate = off`: with GIN's default pending list, rows inserted since the last vacuum
-- sit in an unsorted list that every search scans linearly (up to gin_pending_list_limit,
-- 4 MB), so a keyed upsert's lookup slows as a load goes on: measured on 100,000 documents,
-- 4.3 ms and 435 buffers per keyed SELECT, 393 `$setOnInsert` upserts/s; with the list off
-- and flushed, one index page per lookup and 2,194 upserts/s (BENCHMARKS.md, "The local
-- stack's write path"). Existing indexes are switched and their pending lists flushed.
--
-- Fresh statistics: a keyed lookup filters on the company and the key. Without statistics of
-- the indexed expressions, PostgreSQL guesses each `@>` selective and ANDs both GIN indexes,
-- reading the company's whole posting list on every lookup: an upsert's cost grew with the
-- company's documents (0.45 -> 1.05 s per 500 upserts over 23,000 notes). With statistics it
-- reads the key's index alone. So each FerretDB table is analyzed after every 500 rows + 5 %
-- written (the cluster's autovacuum wakes every 5 s: scripts/stack.sh), not PostgreSQL's
-- default 50 rows + 10 % once a minute.

CREATE SCHEMA IF NOT EXISTS notes_pipeline_stack;
COMMENT ON SCHEMA notes_pipeline_stack IS
    'notes_pipeline local stack: GIN indexes for FerretDB pushdown (devtools/ferretdb_indexes.sql)';
GRANT USAGE ON SCHEMA notes_pipeline_stack TO PUBLIC;

-- FerretDB's pushdown expression for a field: `(_jsonb -> 'f')`, or for a dotted path
-- `(_jsonb #> '{a,b}'::text[])` (its `#>` form; the index must match the query expression).
CREATE OR REPLACE FUNCTION notes_pipeline_stack.pushdown_expression(field text)
RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE
        WHEN strpos(field, '.') = 0 THEN format('(_jsonb -> %L::text)', field)
        ELSE format('(_jsonb #> %L::text[])', string_to_array(field, '.')::text)
    END
$$;

-- The fields of every index a metadata row declares (`_id` included), without duplicates.
CREATE OR REPLACE FUNCTION notes_pipeline_stack.declared_fields(meta jsonb)
RETURNS SETOF text LANGUAGE sql IMMUTABLE AS $$
    SELECT DISTINCT field
      FROM jsonb_array_elements(COALESCE(meta -> 'indexes', '[]'::jsonb)) AS ix,
           jsonb_object_keys(ix -> 'key') AS field
     WHERE field <> '$s'  -- FerretDB's type schema of the key document
$$;

-- Name of the GIN index of `field` on table `tbl`: unique per (table, field), <= 57 bytes.
CREATE OR REPLACE FUNCTION notes_pipeline_stack.gin_index_name(tbl text, field text)
RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT left(tbl, 40) || '_' || left(md5(tbl || '/' || field), 12) || '_gin'
$$;

-- The comment that marks an index as ours and names its field.
CREATE OR REPLACE FUNCTION notes_pipeline_stack.gin_comment(field text)
RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT 'notes_pipeline_stack gin: ' || field
$$;

-- Our GIN indexes on one table: (index, field).
CREATE OR REPLACE FUNCTION notes_pipeline_stack.gin_indexes(rel regclass)
RETURNS TABLE (index_name regclass, field text) LANGUAGE sql STABLE AS $$
    SELECT i.indexrelid::regclass, substr(d.description, length('notes_pipeline_stack gin: ') + 1)
      FROM pg_index i
      JOIN pg_description d
        ON d.objoid = i.indexrelid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0
     WHERE i.indrelid = rel AND d.description LIKE 'notes_pipeline_stack gin: %'
$$;

-- Make the GIN indexes of one collection (schema `db`, metadata row `meta`) match the
-- fields its indexes declare: create the missing ones, drop those no index declares any more.
CREATE OR REPLACE FUNCTION notes_pipeline_stack.sync_collection(db text, meta jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    tbl text := meta ->> 'table';
    rel regclass;
    ours record;
    want text;
    name text;
BEGIN
    IF tbl IS NULL THEN
        RETURN;
    END IF;
    rel := to_regclass(format('%I.%I', db, tbl));
    IF rel IS NULL THEN
        RETURN;
    END IF;
    FOR ours IN
        SELECT g.index_name, g.field FROM notes_pipeline_stack.gin_indexes(rel) AS g
         WHERE g.field NOT IN (SELECT notes_pipeline_stack.declared_fields(meta))
    LOOP
        EXECUTE format('DROP INDEX %s', ours.index_name);
    END LOOP;
    IF NOT COALESCE((SELECT 'autovacuum_analyze_scale_factor=0.05' = ANY (reloptions)
                       FROM pg_class WHERE oid = rel), false) THEN
        EXECUTE format('ALTER TABLE %s SET (autovacuum_analyze_threshold = 500, '
                       'autovacuum_analyze_scale_factor = 0.05)', rel);
    END IF;
    FOR ours IN
        SELECT g.index_name FROM notes_pipeline_stack.gin_indexes(rel) AS g
          JOIN pg_class c ON c.oid = g.index_name
         WHERE NOT COALESCE('fastupdate=off' = ANY (c.reloptions), false)
    LOOP
        EXECUTE format('ALTER INDEX %s SET (fastupdate = off)', ours.index_name);
        PERFORM gin_clean_pending_list(ours.index_name);
    END LOOP;
    FOR want IN
        SELECT f FROM notes_pipeline_stack.declared_fields(meta) AS f
         WHERE f NOT IN (SELECT g.field FROM notes_pipeline_stack.gin_indexes(rel) AS g)
    LOOP
        name := notes_pipeline_stack.gin_index_name(tbl, want);
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin (%s) WITH (fastupdate = off)',
            name, db, tbl, notes_pipeline_stack.pushdown_expression(want));
        EXECUTE format('COMMENT ON INDEX %I.%I IS %L',
                       db, name, notes_pipeline_stack.gin_comment(want));
    END LOOP;
END
$$;

-- Row trigger on <database>._ferretdb_database_metadata. A failure must never fail
-- FerretDB's own statement (the collection would not be created): it becomes a WARNING in
-- the PostgreSQL log, and `python -m devtools.ferretdb_indexes check` reports the gap.
CREATE OR REPLACE FUNCTION notes_pipeline_stack.on_metadata_row()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM notes_pipeline_stack.sync_collection(TG_TABLE_SCHEMA, NEW._jsonb);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'notes_pipeline_stack: GIN sync of %.% failed: %',
            TG_TABLE_SCHEMA, NEW._jsonb ->> '_id', SQLERRM;
    END;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION notes_pipeline_stack.attach(db text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER notes_pipeline_stack_gin AFTER INSERT OR UPDATE '
        'ON %I._ferretdb_database_metadata FOR EACH ROW '
        'EXECUTE FUNCTION notes_pipeline_stack.on_metadata_row()', db);
END
$$;

-- Event trigger: FerretDB created a database (its schema's metadata table) -> attach.
CREATE OR REPLACE FUNCTION notes_pipeline_stack.on_create_table()
RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT n.nspname
          FROM pg_event_trigger_ddl_commands() AS cmd
          JOIN pg_class c ON c.oid = cmd.objid AND cmd.classid = 'pg_class'::regclass
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE cmd.command_tag = 'CREATE TABLE' AND c.relname = '_ferretdb_database_metadata'
    LOOP
        BEGIN
            PERFORM notes_pipeline_stack.attach(r.nspname);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'notes_pipeline_stack: attaching the GIN trigger to %: %',
                r.nspname, SQLERRM;
        END;
    END LOOP;
END
$$;

DROP EVENT TRIGGER IF EXISTS notes_pipeline_stack_ferretdb_gin;
CREATE EVENT TRIGGER notes_pipeline_stack_ferretdb_gin ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION notes_pipeline_stack.on_create_table();

-- Catch up on every FerretDB database that already exists. Returns the databases synced.
CREATE OR REPLACE FUNCTION notes_pipeline_stack.sync_all()
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    db text;
    meta jsonb;
BEGIN
    FOR db IN
        SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname = '_ferretdb_database_metadata' AND c.relkind = 'r'
         ORDER BY 1
    LOOP
        PERFORM notes_pipeline_stack.attach(db);
        FOR meta IN EXECUTE format('SELECT _jsonb FROM %I._ferretdb_database_metadata', db)
        LOOP
            PERFORM notes_pipeline_stack.sync_collection(db, meta);
        END LOOP;
        RETURN NEXT db;
    END LOOP;
END
$$;

-- FerretDB (pgx) runs every query as a cached prepared statement, `_jsonb -> $1 @> $2`.
-- After five executions PostgreSQL may switch a statement to its generic plan, in which
-- `_jsonb -> $1` matches no expression index: a sequential scan from then on for that
-- connection (measured: a generic plan cached while a collection is small or before its
-- index exists is kept, and 100 keyed finds stay at ~3 s instead of ~0.1 s). Custom plans
-- see the constant field name, so the GIN index is always considered. New sessions only.
ALTER DATABASE ferretdb SET plan_cache_mode = force_custom_plan;

DO $$ BEGIN PERFORM notes_pipeline_stack.sync_all(); END $$;
