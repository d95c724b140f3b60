package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stepflow/stepflow/workflow"
)

// Subflows: a step whose node started a child run (workflow.StartChild)
// is committed awaiting_child, and the same transaction creates the child
// run, linked to its parent step (parent_run_id, parent_step, migration
// 009). The child's finishing commit reads whether its parent step still
// awaits it and names the parent's job to publish (Committed.Continue);
// the step function, running that job, calls the node again with the
// child's result. The reconciler repairs a continuation whose publish was
// lost (AwaitingChildren).

// ChildStart is the child run that a step awaiting it starts
// (Outcome.Child, with State awaiting_child).
type ChildStart struct {
	RunID   string             // workflow.ChildRunID of the parent run, step and attempt
	W       *workflow.Workflow // the child's blueprint
	Context map[string]any     // its initial context
	// Input, when not nil, is what its start nodes get instead of Context.
	Input any
}

// StartedChild is a child run a commit created: its start jobs are to be
// published.
type StartedChild struct {
	RunID       string
	BlueprintID string
	Starts      []string
}

// Continuation is the job of a parent step whose child run just finished:
// the same attempt of the step that started the child.
type Continuation struct {
	RunID       string
	BlueprintID string
	NodeID      string // the step key
	Node        string // the node it runs (the step key outside loops)
	Attempt     int
}

// childArgs is a ChildStart encoded for the commit.
type childArgs struct {
	body, context, input []byte
	starts               []string
}

func prepareChild(p *pending) error {
	c := p.c.O.Child
	if c == nil || p.c.O.State != workflow.StepAwaitingChild {
		return nil
	}
	if c.RunID == "" || c.W == nil {
		return errors.New("child run: RunID and W are required")
	}
	var a childArgs
	var err error
	if a.body, err = json.Marshal(c.W.Blueprint); err != nil {
		return fmt.Errorf("encode blueprint %s: %w", c.W.Blueprint.ID, err)
	}
	if a.context, err = jsonArg(nonNilMap(c.Context)); err != nil {
		return fmt.Errorf("encode context of child run %s: %w", c.RunID, err)
	}
	a.input = a.context
	if c.Input != nil {
		if a.input, err = jsonArg(c.Input); err != nil {
			return fmt.Errorf("encode input of child run %s: %w", c.RunID, err)
		}
	}
	a.starts = c.W.StartNodes()
	p.child = &a
	return nil
}

// queueChild adds to b the creation of p's child run, in the transaction
// that commits its parent step awaiting it: its blueprint snapshot, its
// status row (running, linked to the parent step), its context and its
// start steps. The child's id is derived from the parent step's attempt,
// and the status row is inserted ON CONFLICT DO NOTHING (the rest only
// with it), so there is exactly one child however often the step's job is
// delivered.
func (s *Store) queueChild(b *pgx.Batch, p *pending) {
	o, a := &p.c.O, p.child
	if a == nil {
		return
	}
	c := o.Child
	b.Queue(s.createRunSQL(),
		c.RunID, c.W.Blueprint.ID, c.W.Digest, a.context, c.W.Blueprint.Version(), a.body, len(a.starts), a.starts,
		o.RunID, o.NodeID, a.input).QueryRow(func(row pgx.Row) error {
		var created bool
		if err := row.Scan(&created); err != nil {
			return err
		}
		if created {
			p.c.Res.Child = &StartedChild{RunID: c.RunID, BlueprintID: c.W.Blueprint.ID, Starts: a.starts}
		}
		return nil
	})
}

// queueContinue adds to b, in the commit that gives run res's final
// status, the read of the parent step that awaits it, if any: when the
// run is a child and its parent step still awaits this very child (the
// attempt that started it) in a running parent, res.Continue names the
// parent step's job. A run that is no child reads one index entry.
func (s *Store) queueContinue(b *pgx.Batch, runID string, res *Committed) {
	b.Queue(`SELECT c.parent_run_id, c.parent_step, coalesce(s.node, s.node_id), s.attempts, coalesce(p.blueprint_id, '')
		FROM `+s.tables.Statuses+` c
		JOIN `+s.tables.Steps+` s ON s.run_id = c.parent_run_id AND s.node_id = c.parent_step AND s.state = 'awaiting_child'
		JOIN `+s.tables.Statuses+` p ON p.run_id = c.parent_run_id AND p.status = 'running'
		WHERE c.run_id = $1`, runID).Query(func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var k Continuation
			var attempts int
			if err := rows.Scan(&k.RunID, &k.NodeID, &k.Node, &attempts, &k.BlueprintID); err != nil {
				return err
			}
			// The awaiting attempt is not counted yet: it is attempts+1.
			if k.Attempt = attempts + 1; workflow.ChildRunID(k.RunID, k.NodeID, k.Attempt) == runID {
				res.Continue = &k
			}
		}
		return rows.Err()
	})
}

// cancelDescendantsSQL cancels, in the statement that ends run $1 (CTE
// name ended), every run below it that is still running or awaiting: its
// children, their children, and so on.
func (s *Store) cancelDescendantsSQL() string {
	return `tree AS (
			SELECT run_id FROM ` + s.tables.Statuses + ` WHERE parent_run_id IN (SELECT run_id FROM ended)
			UNION
			SELECT c.run_id FROM ` + s.tables.Statuses + ` c JOIN tree t ON c.parent_run_id = t.run_id),
		descendants AS (
			UPDATE ` + s.tables.Statuses + ` SET status = 'cancelled', error = 'cancelled: run ' || $1::text || ', which it runs under, ended',
				finished_at = now(), updated_at = now()
			WHERE run_id IN (SELECT run_id FROM tree) AND status IN ('running', 'awaiting') RETURNING run_id)`
}

// queueCancelDescendants adds to b the cancellation of run's descendants
// (see cancelDescendantsSQL), for the commit that fails the run.
func (s *Store) queueCancelDescendants(b *pgx.Batch, runID string) {
	b.Queue(`WITH RECURSIVE ended AS (SELECT $1::text AS run_id), `+s.cancelDescendantsSQL()+` SELECT count(*) FROM descendants`, runID)
}

// RunLink is a run linked to another as its parent or child.
type RunLink struct {
	RunID       string
	BlueprintID string
	Step        string // the parent's step that started the child
	Status      workflow.RunStatus
	CreatedAt   time.Time
}

// Parent returns the run that started runID as a subflow, with the step
// that did; nil for a run that is no child.
func (s *Store) Parent(ctx context.Context, runID string) (*RunLink, error) {
	var l RunLink
	var status string
	err := s.pool.QueryRow(ctx, `SELECT p.run_id, coalesce(p.blueprint_id, ''), c.parent_step, p.status, p.created_at
		FROM `+s.tables.Statuses+` c JOIN `+s.tables.Statuses+` p ON p.run_id = c.parent_run_id WHERE c.run_id = $1`, runID).
		Scan(&l.RunID, &l.BlueprintID, &l.Step, &status, &l.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parent of run %s: %w", runID, err)
	}
	l.Status = workflow.RunStatus(status)
	return &l, nil
}

// Children lists the child runs runID started, oldest first (through
// parent_idx).
func (s *Store) Children(ctx context.Context, runID string) ([]RunLink, error) {
	rows, err := s.pool.Query(ctx, `SELECT run_id, coalesce(blueprint_id, ''), parent_step, status, created_at
		FROM `+s.tables.Statuses+` WHERE parent_run_id = $1 ORDER BY created_at, run_id`, runID)
	if err != nil {
		return nil, fmt.Errorf("children of run %s: %w", runID, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (RunLink, error) {
		var l RunLink
		var status string
		err := row.Scan(&l.RunID, &l.BlueprintID, &l.Step, &status, &l.CreatedAt)
		l.Status = workflow.RunStatus(status)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("children of run %s: %w", runID, err)
	}
	return out, nil
}

// AwaitingChild is a step awaiting its child run, with the child's status.
type AwaitingChild struct {
	NodeID      string // the step key
	Node        string // the node it runs (the step key outside loops)
	Attempt     int    // the attempt that started the child, which its continuation runs
	ChildRunID  string // workflow.ChildRunID of the run, step and attempt
	ChildStatus workflow.RunStatus
	// ChildFound is false when no child of that id exists (a row edited
	// by hand; no commit leaves that behind).
	ChildFound bool
}

// AwaitingChildren lists runID's steps that await a child run, each with
// its child's status: the reconciler publishes the continuation of those
// whose child has finished, and leaves those whose child runs alone.
func (s *Store) AwaitingChildren(ctx context.Context, runID string) ([]AwaitingChild, error) {
	rows, err := s.pool.Query(ctx, `SELECT node_id, coalesce(node, node_id), attempts FROM `+s.tables.Steps+` WHERE run_id = $1 AND state = 'awaiting_child' ORDER BY created_at, node_id`, runID)
	if err != nil {
		return nil, fmt.Errorf("steps of %s awaiting a child: %w", runID, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AwaitingChild, error) {
		var a AwaitingChild
		err := row.Scan(&a.NodeID, &a.Node, &a.Attempt)
		a.Attempt++
		a.ChildRunID = workflow.ChildRunID(runID, a.NodeID, a.Attempt)
		return a, err
	})
	if err != nil || len(out) == 0 {
		return out, err
	}
	ids := make([]string, len(out))
	for i, a := range out {
		ids[i] = a.ChildRunID
	}
	rows, err = s.pool.Query(ctx, `SELECT run_id, status FROM `+s.tables.Statuses+` WHERE run_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("children of %s: %w", runID, err)
	}
	status := map[string]string{}
	var id, st string
	if _, err := pgx.ForEachRow(rows, []any{&id, &st}, func() error {
		status[id] = st
		return nil
	}); err != nil {
		return nil, fmt.Errorf("children of %s: %w", runID, err)
	}
	for i := range out {
		st, ok := status[out[i].ChildRunID]
		out[i].ChildStatus, out[i].ChildFound = workflow.RunStatus(st), ok
	}
	return out, nil
}

// Depth counts runID's ancestors (0 for a run that is no child), up to
// limit: one recursive read of parent_run_id.
func (s *Store) Depth(ctx context.Context, runID string, limit int) (int, error) {
	var d int
	err := s.pool.QueryRow(ctx, `WITH RECURSIVE up AS (
			SELECT parent_run_id, 1 AS d FROM `+s.tables.Statuses+` WHERE run_id = $1 AND parent_run_id IS NOT NULL
			UNION ALL
			SELECT p.parent_run_id, up.d + 1 FROM `+s.tables.Statuses+` p JOIN up ON p.run_id = up.parent_run_id
			WHERE p.parent_run_id IS NOT NULL AND up.d < $2)
		SELECT coalesce(max(d), 0) FROM up`, runID, limit).Scan(&d)
	if err != nil {
		return 0, fmt.Errorf("depth of run %s: %w", runID, err)
	}
	return d, nil
}

// AwaitedChild is the child run a step awaits, as a resume of that step
// finds it: the resume is forwarded to the child's awaiting step.
type AwaitedChild struct {
	RunID  string // workflow.ChildRunID of the run, step and attempt
	Status workflow.RunStatus
	Found  bool // false when no child of that id exists
	// Awaiting are the child's steps that await: a resume (wait nodes), or
	// a child of their own that awaits; in the order they were created.
	Awaiting []string
}

// AwaitedChildOf returns the child run that step key of runID awaits,
// with the child's awaiting steps; nil when the step does not await a
// child (no such step, or another state). It reads, locking nothing: the
// resume of the child's step is what decides, in its own transaction.
func (s *Store) AwaitedChildOf(ctx context.Context, runID, key string) (*AwaitedChild, error) {
	var attempts int
	err := s.pool.QueryRow(ctx, `SELECT attempts FROM `+s.tables.Steps+` WHERE run_id = $1 AND node_id = $2 AND state = 'awaiting_child'`, runID, key).Scan(&attempts)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("step %s of run %s: %w", key, runID, err)
	}
	// The awaiting attempt is not counted yet: it is attempts+1.
	c := &AwaitedChild{RunID: workflow.ChildRunID(runID, key, attempts+1)}
	var status string
	err = s.pool.QueryRow(ctx, `SELECT status FROM `+s.tables.Statuses+` WHERE run_id = $1`, c.RunID).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("child run %s of %s: %w", c.RunID, runID, err)
	}
	c.Found, c.Status = true, workflow.RunStatus(status)
	rows, err := s.pool.Query(ctx, `SELECT s.node_id FROM `+s.tables.Steps+` s WHERE s.run_id = $1 AND (s.state = 'awaiting'
			OR (s.state = 'awaiting_child' AND EXISTS (SELECT 1 FROM `+s.tables.Statuses+` g
				WHERE g.parent_run_id = $1 AND g.parent_step = s.node_id AND g.status = 'awaiting')))
		ORDER BY s.created_at, s.node_id`, c.RunID)
	if err != nil {
		return nil, fmt.Errorf("awaiting steps of child run %s: %w", c.RunID, err)
	}
	if c.Awaiting, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, fmt.Errorf("awaiting steps of child run %s: %w", c.RunID, err)
	}
	return c, nil
}
