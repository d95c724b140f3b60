-- 002_dead_letters: jobs the bridge dead-lettered, recorded by the reconciler so that
-- their runs end honestly (failed, with the reason) and can be listed and replayed.
CREATE TABLE IF NOT EXISTS {{.DeadLetters}} (
    id              bigserial   PRIMARY KEY,
    dead_letter_id  text        NOT NULL UNIQUE,
    message_id      text,
    run_id          text,
    node_id         text,
    blueprint_id    text,
    body            bytea       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}',
    error_code      text        NOT NULL DEFAULT '',
    error_reason    text        NOT NULL DEFAULT '',
    attempts        integer     NOT NULL DEFAULT 0,
    first_failure   timestamptz,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz
);
CREATE INDEX IF NOT EXISTS {{ident .Raw.DeadLetters "run_idx"}} ON {{.DeadLetters}} (run_id) WHERE replayed_at IS NULL;
