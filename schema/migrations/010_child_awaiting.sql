-- 010_child_awaiting: a subflow whose child run pauses pauses its parent (Flowcraft's
-- behaviour). A parent's awaiting count (007) counts, besides its own awaiting steps, its
-- steps awaiting a child run that is 'awaiting'; so a parent whose only pending steps wait
-- for awaiting children is 'awaiting' too, and a child that is resumed (or ends) makes its
-- parent 'running' again.
--
-- A trigger keeps that count, in the transaction that changes the child's status (a
-- commit, a resume, a cancel), so no crash leaves a parent's status behind its child's.
-- It fires only when a child run's status enters or leaves 'awaiting', which is rare; the
-- WHEN clause is all the per-step status updates pay. The parent's status row is locked
-- after the child's (children's commits, resumes): a cancel, and the commit that fails a
-- parent, lock parent then children, so one racing a child's pause or resume can
-- deadlock, as can two group commits that share runs; PostgreSQL breaks it by failing one
-- transaction, which changes nothing (a group is committed again one outcome at a time,
-- a single commit's job is redelivered, a cancel or resume answers its error).
-- The parent's own status update fires the trigger for its parent in turn: a grandchild
-- that awaits makes the whole chain awaiting. Only a parent still running or awaiting,
-- whose step still awaits this child, is touched.
CREATE OR REPLACE FUNCTION {{ident .Raw.Statuses "child_awaits"}}() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    d integer := CASE WHEN NEW.status = 'awaiting' THEN 1 ELSE -1 END;
BEGIN
    UPDATE {{.Statuses}} p SET awaiting = greatest(p.awaiting + d, 0),
        status = CASE WHEN p.pending > 0 AND greatest(p.awaiting + d, 0) >= p.pending THEN 'awaiting' ELSE 'running' END,
        updated_at = now()
    WHERE p.run_id = NEW.parent_run_id AND p.status IN ('running', 'awaiting')
        AND EXISTS (SELECT 1 FROM {{.Steps}} s
            WHERE s.run_id = NEW.parent_run_id AND s.node_id = NEW.parent_step AND s.state = 'awaiting_child');
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER {{ident .Raw.Statuses "child_awaits"}}
    AFTER UPDATE OF status ON {{.Statuses}} FOR EACH ROW
    WHEN (NEW.parent_run_id IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status
        AND (OLD.status = 'awaiting' OR NEW.status = 'awaiting'))
    EXECUTE FUNCTION {{ident .Raw.Statuses "child_awaits"}}();
