-- 005_run_listing: list runs newest first, a page at a time (the API's GET /runs, the
-- console), and find the newest stored snapshot of a blueprint id (POST /runs with a
-- blueprintId).
--
-- The keys are columns a step never changes (created_at, run_id; blueprint_id is set
-- when a run is created or its blueprint pinned), so the per-step updates of a status
-- row stay HOT updates (003). A page is (created_at, run_id) < the cursor, in that
-- order descending: a backward scan of the first index, or of the second for one
-- blueprint. Listing running runs can also use running_idx (003).
--
-- Migrations run in one transaction, so these are plain CREATE INDEX, which holds
-- writes to the table while it builds. On a large statuses table, build them first
-- with CREATE INDEX CONCURRENTLY under the same names; this file then skips them.
CREATE INDEX IF NOT EXISTS {{ident .Raw.Statuses "created_idx"}}
    ON {{.Statuses}} (created_at, run_id);
CREATE INDEX IF NOT EXISTS {{ident .Raw.Statuses "blueprint_idx"}}
    ON {{.Statuses}} (blueprint_id, created_at, run_id);
CREATE INDEX IF NOT EXISTS {{ident .Raw.Blueprints "id_created_idx"}}
    ON {{.Blueprints}} (blueprint_id, created_at);
