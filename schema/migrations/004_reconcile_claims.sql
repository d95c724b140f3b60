-- 004_reconcile_claims: reconcilers claim a stalled run by stamping it, in a short
-- transaction of their own, instead of holding its row lock while they republish; a
-- claim keeps other reconcilers off the run for one threshold. Not an index key, so
-- stamping stays a HOT update.
ALTER TABLE {{.Statuses}} ADD COLUMN IF NOT EXISTS reconciled_at timestamptz;
