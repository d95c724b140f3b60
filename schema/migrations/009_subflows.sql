-- 009_subflows: a subflow's child is a run of its own, linked to the run and step that
-- started it. parent_run_id and parent_step are written when the child's status row is
-- inserted (by the commit of the parent step that awaits it) and never change, so the
-- per-step updates of a status row stay HOT updates (003). NULL for every other run.
--
-- parent_idx lists a run's children (stepflow status PARENT, the console, cancelling a
-- parent) in the order they were started; it holds child runs only.
-- (006 and 008 are the graph built-ins'.)
ALTER TABLE {{.Statuses}}
    ADD COLUMN IF NOT EXISTS parent_run_id text,
    ADD COLUMN IF NOT EXISTS parent_step   text;
CREATE INDEX IF NOT EXISTS {{ident .Raw.Statuses "parent_idx"}}
    ON {{.Statuses}} (parent_run_id, created_at) WHERE parent_run_id IS NOT NULL;
