-- 001_init: runs (contexts, statuses), steps and blueprint snapshots.
--
-- Contexts and Statuses may already exist, created by the Flowcraft adapter as
--   contexts(run_id text primary key, context_data jsonb)
--   statuses(run_id text primary key, status text, status_data jsonb, updated_at timestamptz)
-- so they are created with the adapter's columns, then given ours with ADD COLUMN IF NOT
-- EXISTS and defaults: the adapter's INSERTs, which name only its columns, keep working.
-- NOT NULL is not imposed on the adapter's own columns of an existing table: its rows
-- may hold NULLs there and the adapter may still be writing.

CREATE TABLE IF NOT EXISTS {{.Contexts}} (
    run_id       text  PRIMARY KEY,
    context_data jsonb NOT NULL DEFAULT '{}'
);
ALTER TABLE {{.Contexts}} ALTER COLUMN context_data SET DEFAULT '{}';

CREATE TABLE IF NOT EXISTS {{.Statuses}} (
    run_id      text        PRIMARY KEY,
    status      text        NOT NULL,
    status_data jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE {{.Statuses}}
    ALTER COLUMN updated_at SET DEFAULT now(),
    ADD COLUMN IF NOT EXISTS blueprint_id     text,
    ADD COLUMN IF NOT EXISTS blueprint_digest text,
    ADD COLUMN IF NOT EXISTS pending          integer     NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS error            text,
    ADD COLUMN IF NOT EXISTS created_at       timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS finished_at      timestamptz;

-- The reconciler's scan: running runs whose last step finished long ago.
CREATE INDEX IF NOT EXISTS {{ident .Raw.Statuses "stalled_idx"}}
    ON {{.Statuses}} (updated_at) WHERE status = 'running';

-- One row per (run, node): the exactly-once key for starting a node.
CREATE TABLE IF NOT EXISTS {{.Steps}} (
    run_id      text        NOT NULL,
    node_id     text        NOT NULL,
    state       text        NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    input       jsonb,
    output      jsonb,
    action      text,
    taken       text[],
    deliveries  jsonb,
    error       text,
    wake_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, node_id)
);
CREATE INDEX IF NOT EXISTS {{ident .Raw.Steps "run_state_idx"}}
    ON {{.Steps}} (run_id, state);

-- Immutable blueprint snapshots, so a run keeps the version it started with.
CREATE TABLE IF NOT EXISTS {{.Blueprints}} (
    digest       text        PRIMARY KEY,
    blueprint_id text        NOT NULL,
    version      text        NOT NULL DEFAULT '',
    body         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
