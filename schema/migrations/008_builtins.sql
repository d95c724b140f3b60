-- 008_builtins: loops and dynamic nodes (batches) on the stack. A step row is one step:
-- node_id holds its step key ("<node>" outside loops, as before; "<node>#<n>" for an
-- iteration of a loop's node; a dynamic node's id). An iteration's row names its node
-- and iteration, so that "the latest output of a node" is one indexed read and a
-- completed run's context has each node's last output.
--
-- A step whose result created dynamic nodes keeps them with that result (dynamic, the
-- definitions in creation order; gather, the node that receives their outputs), written
-- by the commit that records the result, and counts per wave those that have resolved
-- (dynamic_resolved[w+1]), so a worker's commit decides its wave and its gather from the
-- count instead of reading its siblings. A dynamic node's own row keeps its definition.
ALTER TABLE {{.Steps}}
    ADD COLUMN IF NOT EXISTS node             text,
    ADD COLUMN IF NOT EXISTS iteration        integer,
    ADD COLUMN IF NOT EXISTS dynamic          jsonb,
    ADD COLUMN IF NOT EXISTS gather           text,
    ADD COLUMN IF NOT EXISTS dynamic_resolved integer[],
    ADD COLUMN IF NOT EXISTS definition       jsonb;
CREATE INDEX IF NOT EXISTS {{ident .Raw.Steps "node_idx"}}
    ON {{.Steps}} (run_id, node, iteration) WHERE node IS NOT NULL;
