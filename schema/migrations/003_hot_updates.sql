-- 003_hot_updates: let the per-step updates of a run's status row and of a step row
-- be HOT updates (no index maintenance), which every step pays for otherwise.
--
-- updated_at changes on every step, so it is no longer an index key: the stalled-run
-- scan enumerates running runs through an index on created_at (which never changes)
-- restricted to status = 'running', and filters them by updated_at. A step's state
-- changes on every step too; its run's rows are found through the primary key
-- (run_id, node_id) instead. Free space in each page keeps the new row versions on
-- the same page.
DROP INDEX IF EXISTS {{ident .Raw.Statuses "stalled_idx"}};
CREATE INDEX IF NOT EXISTS {{ident .Raw.Statuses "running_idx"}}
    ON {{.Statuses}} (created_at) WHERE status = 'running';
DROP INDEX IF EXISTS {{ident .Raw.Steps "run_state_idx"}};
ALTER TABLE {{.Statuses}} SET (fillfactor = 70);
ALTER TABLE {{.Steps}} SET (fillfactor = 80);
