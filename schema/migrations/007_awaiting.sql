-- 007_awaiting: pausing. A run's status row counts its steps that await a resume (wait
-- nodes), so a commit knows, under the run's lock, when what is left only awaits and the
-- run becomes 'awaiting' (no reads of other steps). A webhook step keeps the SHA-256 of
-- its endpoint's token, never the token, and when the endpoint was used (one-shot).
-- (006 is the graph built-ins'.)
--
-- Awaiting runs are listed by status (the API's ?status=awaiting, the console) through
-- an index of their own, as running runs are through running_idx: few among millions of
-- finished runs. status is already a predicate of running_idx, so changing it was never
-- a HOT update; the per-step updates (pending, awaiting, updated_at) still are.
ALTER TABLE {{.Statuses}} ADD COLUMN IF NOT EXISTS awaiting integer NOT NULL DEFAULT 0;
ALTER TABLE {{.Steps}}
    ADD COLUMN IF NOT EXISTS webhook_hash    bytea,
    ADD COLUMN IF NOT EXISTS webhook_used_at timestamptz;
CREATE INDEX IF NOT EXISTS {{ident .Raw.Statuses "awaiting_idx"}}
    ON {{.Statuses}} (created_at, run_id) WHERE status = 'awaiting';
