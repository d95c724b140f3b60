package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/stepflow/stepflow/workflow"
)

// Outcome is the result of one attempt of one step, to be committed.
type Outcome struct {
	RunID string
	// NodeID is the step key (see workflow.Step): the node id outside
	// loops.
	NodeID string
	// Definition, for a dynamic node's step, is its definition (as
	// loaded): its commit counts it among its creator's resolved nodes.
	Definition *workflow.DynamicNode
	// LoadedAttempts is the step's attempts when it was loaded: the commit
	// applies only if nobody finished the attempt meanwhile.
	LoadedAttempts int
	State          workflow.StepState // succeeded, retrying, sleeping, awaiting_fallback, failed
	Attempts       int
	Result         workflow.NodeResult
	OutputJSON     []byte // Result.Output as JSON, when the caller has encoded it already
	Routing        workflow.Routing
	Error          string
	WakeAt         *time.Time
	StartedAt      time.Time
	FinishedAt     time.Time
	ContextSet     map[string]any
	ContextDeleted []string
	// Fallback, with State awaiting_fallback: the node to make ready, with
	// FallbackInput.
	Fallback      string
	FallbackInput any
	// Recovered: nodes this (fallback) step stands in for, with their
	// routing of this step's result.
	Recovered map[string]workflow.Routing
	// WebhookHash, with a webhook step's success: the SHA-256 of its
	// endpoint's token, stored with the result (see ResumeWebhook).
	WebhookHash []byte
	// Child, with State awaiting_child: the child run to create with the
	// step's commit (subflows: children.go).
	Child *ChildStart
}

// Committed is what a commit decided.
type Committed struct {
	Applied   bool               // false: the run is not running or the step was already finished
	RunStatus workflow.RunStatus // the run's status after the commit
	Ready     []string           // steps (keys) made ready by this commit (jobs to publish)
	Skipped   []string
	// Finished: this commit gave the run its final status. Of the outcomes
	// of one run committed together, only one says so.
	Finished bool
	// Child: the child run this commit created (its start jobs are to be
	// published). Continue, with Finished, for a child run: its parent's
	// step to run again (subflows: children.go).
	Child    *StartedChild
	Continue *Continuation
}

// Commit is one outcome to commit, with the workflow of its run. CommitSteps
// fills in Res, or Err when this outcome could not be committed.
type Commit struct {
	W   *workflow.Workflow
	O   Outcome
	Res *Committed
	Err error
}

// CommitStep applies one outcome in one transaction; see CommitSteps.
func (s *Store) CommitStep(ctx context.Context, w *workflow.Workflow, o Outcome) (*Committed, error) {
	c := &Commit{W: w, O: o}
	s.CommitSteps(ctx, []*Commit{c})
	return c.Res, c.Err
}

// CommitSteps applies outcomes — of one run or of many — in one
// transaction (group commit): for each, the step's result and routing,
// context changes, the successors it makes ready (each exactly once),
// skips, and its run's bookkeeping (pending count, final status when
// nothing is pending). Every Commit gets its Res or its Err.
//
// The transaction first locks the status rows of all the runs involved
// (FOR UPDATE, in run id order, so concurrent group commits cannot
// deadlock), so the commits of one run are serialised and a join sees every
// predecessor's committed result. It takes two round trips whatever the
// number of outcomes: one pipelined batch locks the runs, updates the steps
// (only an unfinished attempt, as loaded, of a running run) and reads the
// rows the join and skip decisions need; the decisions are made once per
// run over all its applied steps (workflow.DecideRun); a second batch
// writes their consequences and commits. One WAL flush serves the whole
// group.
func (s *Store) CommitSteps(ctx context.Context, cs []*Commit) {
	ps := make([]*pending, 0, len(cs))
	for _, c := range cs {
		p, err := prepare(c)
		if err != nil {
			c.Err = fmt.Errorf("commit step %s/%s: %w", c.O.RunID, c.O.NodeID, err)
			continue
		}
		ps = append(ps, p)
	}
	if len(ps) == 0 {
		return
	}
	if len(ps) == 1 {
		if done, err := s.commitAlone(ctx, ps[0]); done {
			if err != nil {
				ps[0].c.Res, ps[0].c.Err = nil, fmt.Errorf("commit step %s/%s: %w", ps[0].c.O.RunID, ps[0].c.O.NodeID, err)
			}
			return
		}
	}
	err := s.commitSteps(ctx, ps)
	var refused *pgconn.PgError
	if err != nil && len(ps) > 1 && errors.As(err, &refused) && ctx.Err() == nil {
		// The database refused a statement (a value it cannot store, a
		// deadlock, …) and the whole group rolled back. One outcome it
		// refuses must not hold back the others: commit each alone.
		for _, p := range ps {
			p.c.Res, p.c.Err = nil, nil
			alone, _ := prepare(p.c) // it was prepared once already
			if err := s.commitSteps(ctx, []*pending{alone}); err != nil {
				p.c.Res, p.c.Err = nil, fmt.Errorf("commit step %s/%s: %w", p.c.O.RunID, p.c.O.NodeID, err)
			}
		}
		return
	}
	if err != nil {
		for _, p := range ps {
			p.c.Res, p.c.Err = nil, fmt.Errorf("commit step %s/%s: %w", p.c.O.RunID, p.c.O.NodeID, err)
		}
	}
}

// pending is a Commit with its arguments encoded, on its way through the
// transaction.
type pending struct {
	c                   *Commit
	output, deliveries  []byte
	dynamic             []byte // the dynamic nodes the result created; nil: none
	waves               int    // their number of waves
	contextSet          []byte // nil: no context changes
	finished            *time.Time
	recovered           []string // nodes the outcome stands in for, sorted
	recoveredDeliveries [][]byte
	applied             bool
	recoveredApplied    map[string]bool
	child               *childArgs // subflows: children.go
}

func prepare(c *Commit) (*pending, error) {
	o := &c.O
	p := &pending{c: c, recoveredApplied: map[string]bool{}}
	var err error
	if o.OutputJSON != nil {
		p.output = o.OutputJSON
	} else if p.output, err = jsonArg(o.Result.Output); err != nil {
		return nil, fmt.Errorf("encode output of %s: %w", o.NodeID, err)
	}
	if p.deliveries, err = jsonArg(o.Routing.Deliveries); err != nil {
		return nil, fmt.Errorf("encode deliveries of %s: %w", o.NodeID, err)
	}
	if len(o.Routing.Dynamic) > 0 {
		if p.dynamic, err = jsonArg(o.Routing.Dynamic); err != nil {
			return nil, fmt.Errorf("encode dynamic nodes of %s: %w", o.NodeID, err)
		}
		for _, d := range o.Routing.Dynamic {
			p.waves = max(p.waves, d.Wave+1)
		}
	}
	if len(o.ContextSet) > 0 || len(o.ContextDeleted) > 0 {
		if p.contextSet, err = jsonArg(nonNilMap(o.ContextSet)); err != nil {
			return nil, fmt.Errorf("encode context changes of %s: %w", o.NodeID, err)
		}
	}
	if o.State.Terminal() || o.State == workflow.StepAwaitingFallback {
		p.finished = &o.FinishedAt
	}
	for backed := range o.Recovered {
		p.recovered = append(p.recovered, backed)
	}
	slices.Sort(p.recovered)
	if err := prepareChild(p); err != nil { // subflows: children.go
		return nil, err
	}
	for _, backed := range p.recovered {
		d, err := jsonArg(o.Recovered[backed].Deliveries)
		if err != nil {
			return nil, fmt.Errorf("encode deliveries of %s: %w", backed, err)
		}
		p.recoveredDeliveries = append(p.recoveredDeliveries, d)
	}
	return p, nil
}

// runGroup is the outcomes of one run in a group commit.
type runGroup struct {
	runID   string
	w       *workflow.Workflow
	ps      []*pending
	status  string
	pending int
	locked  bool
	states  *txStates

	awaiting int // steps awaiting a resume (see workflow.AwaitStatus)
	// stored is the awaiting count as the status row held it when locked;
	// the decision moves the row's count by awaiting' - stored, for a
	// child committed earlier in the transaction may have moved it too
	// (migration 010's trigger).
	stored int
}

func (s *Store) commitSteps(ctx context.Context, ps []*pending) (err error) {
	byRun := map[string]*runGroup{}
	var groups []*runGroup
	for _, p := range ps {
		g := byRun[p.c.O.RunID]
		if g == nil {
			g = &runGroup{runID: p.c.O.RunID, w: p.c.W}
			byRun[g.runID] = g
			groups = append(groups, g)
		}
		g.ps = append(g.ps, p)
	}
	slices.SortFunc(groups, func(a, b *runGroup) int { return strings.Compare(a.runID, b.runID) })
	runIDs := make([]string, len(groups))
	for i, g := range groups {
		runIDs[i] = g.runID
	}

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	inTx := false
	defer func() {
		if inTx {
			// Roll back on any early return; a broken connection is
			// discarded by the pool on release.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = conn.Exec(rctx, "ROLLBACK")
			cancel()
		}
	}()

	// Round trip 1: lock the runs, finish the steps (only an unfinished
	// attempt, as loaded, of a running run), recover the nodes a fallback
	// stands in for, and read what Advance will ask about.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	lockSQL, lockArg := `SELECT run_id, status, pending, awaiting FROM `+s.tables.Statuses+` WHERE run_id = ANY($1) ORDER BY run_id FOR UPDATE`, any(runIDs)
	if len(runIDs) == 1 {
		lockSQL, lockArg = `SELECT run_id, status, pending, awaiting FROM `+s.tables.Statuses+` WHERE run_id = $1 FOR UPDATE`, runIDs[0]
	}
	b.Queue(lockSQL, lockArg).Query(func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var id, status string
			var n, awaiting int
			if err := rows.Scan(&id, &status, &n, &awaiting); err != nil {
				return err
			}
			if g := byRun[id]; g != nil {
				g.status, g.pending, g.awaiting, g.stored, g.locked = status, n, awaiting, awaiting, true
			}
		}
		return rows.Err()
	})
	for _, g := range groups {
		for _, p := range g.ps {
			s.queueFinish(b, p)
		}
		var advancing []string
		for _, p := range g.ps {
			if p.c.O.State.Resolved() {
				advancing = append(advancing, p.c.O.NodeID)
			}
			advancing = append(advancing, p.recovered...)
		}
		g.states = s.newTxStates(ctx, conn, g.runID, g.w)
		for _, p := range g.ps {
			g.states.fresh[p.c.O.NodeID] = true
			for _, backed := range p.recovered {
				g.states.fresh[backed] = true
			}
			if d := p.c.O.Definition; d != nil {
				g.states.defs[p.c.O.NodeID] = *d
			}
		}
		if len(advancing) > 0 {
			g.states.queuePrefetch(b, advancing)
		}
	}
	inTx = true
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}

	// Decide, run by run, then round trip 2: write the consequences and
	// commit.
	b = &pgx.Batch{}
	for _, g := range groups {
		if err := s.decide(b, g); err != nil {
			return err
		}
	}
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	inTx = false
	return nil
}

// queueFinish adds to b the update that finishes p's step — applied only if
// the step is at the attempt it was loaded at and its run is running (its
// status row is locked by this transaction) — and the recovery of the nodes
// p stands in for, applied only with it.
func (s *Store) queueFinish(b *pgx.Batch, p *pending) {
	o := &p.c.O
	args := []any{o.RunID, o.NodeID, string(o.State), o.Attempts, p.output, o.Result.Action, nonNil(o.Routing.Taken), p.deliveries, o.Error, o.WakeAt,
		o.StartedAt, p.finished, o.LoadedAttempts, p.dynamic, o.Routing.Gather, p.waves}
	// A result that creates dynamic nodes keeps them, with a count of
	// each wave's resolved nodes from zero.
	finish := `UPDATE ` + s.tables.Steps + ` SET state = $3, attempts = $4, output = $5, action = nullif($6, ''), taken = $7, deliveries = $8, error = nullif($9, ''), wake_at = $10,
			started_at = coalesce(started_at, $11), finished_at = $12, updated_at = now(),
			dynamic = $14, gather = nullif($15, ''), dynamic_resolved = CASE WHEN $16::int > 0 THEN array_fill(0, ARRAY[$16::int]) END
			WHERE run_id = $1 AND node_id = $2 AND state IN ('ready', 'retrying', 'sleeping', 'awaiting_child') AND attempts = $13
			AND EXISTS (SELECT 1 FROM ` + s.tables.Statuses + ` WHERE run_id = $1 AND status = 'running')
			RETURNING node_id`
	if d := o.Definition; d != nil && o.State.Resolved() {
		// A dynamic node that resolves counts in its creator's row, in the
		// same statement (see DynamicCounts).
		args = append(args, d.Source, d.Wave+1)
		b.Queue(`WITH me AS (`+finish+`),
			tally AS (UPDATE `+s.tables.Steps+` SET dynamic_resolved[$18::int] = coalesce(dynamic_resolved[$18::int], 0) + 1
				WHERE run_id = $1 AND node_id = $17 AND EXISTS (SELECT 1 FROM me))
			SELECT EXISTS (SELECT 1 FROM me)`, args...).QueryRow(func(row pgx.Row) error {
			return row.Scan(&p.applied)
		})
		return
	}
	if len(p.recovered) == 0 {
		b.Queue(finish, args...).Exec(func(tag pgconn.CommandTag) error {
			p.applied = tag.RowsAffected() > 0
			return nil
		})
		return
	}
	// A fallback's step and the recovery of the nodes it stands in for are
	// one statement, so that the recoveries apply only with it.
	var sql strings.Builder
	sql.WriteString(`WITH me AS (` + finish + `)`)
	var sel []string
	for i, backed := range p.recovered {
		routing := o.Recovered[backed]
		n := len(args)
		args = append(args, backed, nonNil(routing.Taken), p.recoveredDeliveries[i])
		fmt.Fprintf(&sql, `, r%d AS (UPDATE %s SET state = 'recovered', output = $5, action = nullif($6, ''), taken = $%d, deliveries = $%d, updated_at = now()
			WHERE run_id = $1 AND node_id = $%d AND state = 'awaiting_fallback' AND EXISTS (SELECT 1 FROM me) RETURNING node_id)`,
			i, s.tables.Steps, n+2, n+3, n+1)
		sel = append(sel, fmt.Sprintf("(SELECT node_id FROM r%d)", i))
	}
	sql.WriteString(` SELECT EXISTS (SELECT 1 FROM me), ARRAY[` + strings.Join(sel, ", ") + `]`)
	b.Queue(sql.String(), args...).QueryRow(func(row pgx.Row) error {
		var done []*string
		if err := row.Scan(&p.applied, &done); err != nil {
			return err
		}
		for _, id := range done {
			if id != nil {
				p.recoveredApplied[*id] = true
			}
		}
		return nil
	})
}

// decide turns the decision of one run's outcomes (workflow.DecideRun),
// now that its steps are updated, into what b writes: context changes,
// skipped and ready steps, the run's pending count or final status. It
// fills in every outcome's Res.
func (s *Store) decide(b *pgx.Batch, g *runGroup) error {
	status := workflow.RunStatus(g.status)
	if !g.locked {
		err := fmt.Errorf("run %s: %w", g.runID, ErrRunNotFound)
		for _, p := range g.ps {
			p.c.Err = fmt.Errorf("commit step %s/%s: %w", p.c.O.RunID, p.c.O.NodeID, err)
		}
		return nil
	}
	var applied []*pending
	for _, p := range g.ps {
		p.c.Res = &Committed{RunStatus: status}
		if status == workflow.RunRunning && p.applied {
			p.c.Res.Applied = true
			applied = append(applied, p)
		}
	}
	if len(applied) == 0 {
		return nil // nothing of this run changed
	}
	steps := make([]workflow.AppliedStep, len(applied))
	for i, p := range applied {
		o := &p.c.O
		if p.contextSet != nil {
			b.Queue(`UPDATE `+s.tables.Contexts+` SET context_data = (context_data - $2::text[]) || $3::jsonb WHERE run_id = $1`,
				o.RunID, nonNil(o.ContextDeleted), p.contextSet)
		}
		if o.WebhookHash != nil && o.State == workflow.StepSucceeded {
			b.Queue(s.webhookHashSQL(), o.RunID, o.NodeID, o.WebhookHash)
		}
		steps[i] = workflow.AppliedStep{NodeID: o.NodeID, State: o.State, Taken: o.Routing.Taken, Error: o.Error, Fallback: o.Fallback, FallbackInput: o.FallbackInput}
		for _, backed := range p.recovered {
			if p.recoveredApplied[backed] {
				steps[i].Recovered = append(steps[i].Recovered, workflow.RecoveredStep{NodeID: backed, Taken: o.Recovered[backed].Taken})
			}
		}
	}
	d := g.w.DecideRun(status, g.pending, steps, g.states)
	if g.states.err != nil {
		return g.states.err
	}
	// What is left may only await (wait nodes): the run is awaiting.
	awaiting := workflow.AwaitingAfter(g.awaiting, steps)
	d.Status = workflow.AwaitStatus(d.Status, d.Pending, awaiting)
	for _, p := range g.ps {
		p.c.Res.RunStatus = d.Status
	}
	if d.Status == workflow.RunFailed {
		b.Queue(s.failSQL(),
			g.runID, d.Error, g.w.StepNode(d.FailedNode))
		applied[d.Finisher].c.Res.Finished = true
		// Subflows (children.go): the run's children stop with it, and a
		// child's parent step goes on.
		s.queueCancelDescendants(b, g.runID)
		s.queueContinue(b, g.runID, applied[d.Finisher].c.Res)
		return nil
	}
	for _, p := range applied {
		s.queueChild(b, p) // subflows: a step awaiting its child creates it
	}
	if len(d.Skipped) > 0 {
		sql, args := s.skipStepsSQL(g.w, g.runID, d.Skipped)
		b.Queue(sql, args...)
		applied[0].c.Res.Skipped = d.Skipped
	}
	if len(d.LoopExits) > 0 {
		// After the skips: a controller step skipped in this decision ends
		// its loop too.
		sql, args := s.loopExitsSQL(g.runID, d.LoopExits)
		b.Queue(sql, args...)
	}
	if len(d.Ready) > 0 {
		ready := make([]workflow.ReadyNode, len(d.Ready))
		for i, rn := range d.Ready {
			ready[i] = rn.ReadyNode
		}
		// Under the run's lock no other commit inserts this run's rows,
		// and DecideRun only names nodes without one: every row is new.
		insertSQL, args, err := s.readyStepsSQL(g.w, g.runID, ready)
		if err != nil {
			return err
		}
		b.Queue(insertSQL, args...).Query(func(rows pgx.Rows) error {
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			for _, id := range ids {
				// The last entry for a node names its owner.
				for i := len(d.Ready) - 1; i >= 0; i-- {
					if d.Ready[i].ID == id {
						p := applied[d.Ready[i].Owner]
						p.c.Res.Ready = append(p.c.Res.Ready, id)
						break
					}
				}
			}
			return err
		})
	}
	if d.Status == workflow.RunRunning || d.Status == workflow.RunAwaiting {
		// Touching updated_at is what tells the reconciler the run moves.
		// The awaiting count moves by this decision's change, and the
		// status follows the count as AwaitStatus says.
		b.Queue(`UPDATE `+s.tables.Statuses+` SET pending = $2::int, awaiting = greatest(awaiting + ($3::int - $4::int), 0),
			status = CASE WHEN $2::int > 0 AND greatest(awaiting + ($3::int - $4::int), 0) >= $2::int THEN 'awaiting' ELSE 'running' END,
			updated_at = now() WHERE run_id = $1`,
			g.runID, d.Pending, awaiting, g.stored)
		return nil
	}
	b.Queue(s.completeSQL(), g.runID)
	applied[d.Finisher].c.Res.Finished = true
	s.queueContinue(b, g.runID, applied[d.Finisher].c.Res) // subflows: children.go
	return nil
}

// failSQL fails run $1 with error $2, naming node $3.
func (s *Store) failSQL() string {
	return `UPDATE ` + s.tables.Statuses + ` SET status = 'failed', error = $2, status_data = jsonb_build_object('error', $2::text, 'nodeId', $3::text),
		pending = 0, finished_at = now(), updated_at = now() WHERE run_id = $1`
}

// readySQL inserts run $1's nodes $2 (outside loops) as ready with inputs
// $3 and returns those inserted.
func (s *Store) readySQL() string {
	return `INSERT INTO ` + s.tables.Steps + ` (run_id, node_id, state, input) SELECT $1, n, 'ready', i FROM unnest($2::text[], $3::jsonb[]) AS u(n, i) ON CONFLICT DO NOTHING RETURNING node_id`
}

// stepColumnsOf are the node and iteration columns of step key: set for a
// loop iteration's step, NULL otherwise.
func stepColumnsOf(w *workflow.Workflow, key string) (node *string, iteration *int32) {
	if s, ok := w.Step(key); ok && s.InLoop {
		n, it := s.Node.ID, int32(s.Iteration)
		return &n, &it
	}
	return nil, nil
}

// readyStepsSQL inserts run's steps ready as ready, with their inputs,
// the node and iteration of a loop's step and a dynamic node's definition,
// and returns the keys inserted. One step (a chain's next) is inserted
// without arrays (see LoadSteps).
func (s *Store) readyStepsSQL(w *workflow.Workflow, runID string, ready []workflow.ReadyNode) (string, []any, error) {
	keys := make([]string, len(ready))
	inputs := make([][]byte, len(ready))
	nodes := make([]*string, len(ready))
	its := make([]*int32, len(ready))
	defs := make([][]byte, len(ready))
	for i, rn := range ready {
		in, err := jsonArg(rn.Input)
		if err != nil {
			return "", nil, fmt.Errorf("encode input of %s: %w", rn.ID, err)
		}
		keys[i], inputs[i] = rn.ID, in
		nodes[i], its[i] = stepColumnsOf(w, rn.ID)
		if rn.Dynamic != nil {
			if defs[i], err = jsonArg(rn.Dynamic); err != nil {
				return "", nil, fmt.Errorf("encode definition of %s: %w", rn.ID, err)
			}
		}
	}
	cols := ` (run_id, node_id, state, input, node, iteration, definition) `
	if len(ready) == 1 {
		return `INSERT INTO ` + s.tables.Steps + cols + `VALUES ($1, $2, 'ready', $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING node_id`,
			[]any{runID, keys[0], inputs[0], nodes[0], its[0], defs[0]}, nil
	}
	return `INSERT INTO ` + s.tables.Steps + cols + `SELECT $1, k, 'ready', i, n, it, d FROM unnest($2::text[], $3::jsonb[], $4::text[], $5::int[], $6::jsonb[]) AS u(k, i, n, it, d)
		ON CONFLICT DO NOTHING RETURNING node_id`, []any{runID, keys, inputs, nodes, its, defs}, nil
}

// skipStepsSQL inserts run's steps keys as skipped.
func (s *Store) skipStepsSQL(w *workflow.Workflow, runID string, keys []string) (string, []any) {
	nodes := make([]*string, len(keys))
	its := make([]*int32, len(keys))
	for i, k := range keys {
		nodes[i], its[i] = stepColumnsOf(w, k)
	}
	return `INSERT INTO ` + s.tables.Steps + ` (run_id, node_id, state, finished_at, node, iteration)
		SELECT $1, k, 'skipped', now(), n, it FROM unnest($2::text[], $3::text[], $4::int[]) AS u(k, n, it) ON CONFLICT DO NOTHING`, []any{runID, keys, nodes, its}
}

// loopExitsSQL records each loop exit: the controller step's row copied
// to the loop's exit step (its state, result, taken edges and
// deliveries), which the loop's outgoing edges leave from.
func (s *Store) loopExitsSQL(runID string, exits []workflow.LoopExit) (string, []any) {
	loops := make([]string, len(exits))
	steps := make([]string, len(exits))
	for i, ex := range exits {
		loops[i], steps[i] = ex.Loop, ex.Step
	}
	return `INSERT INTO ` + s.tables.Steps + ` (run_id, node_id, state, attempts, output, action, taken, deliveries, started_at, finished_at)
		SELECT s.run_id, u.exit, s.state, s.attempts, s.output, s.action, s.taken, s.deliveries, s.started_at, coalesce(s.finished_at, now())
		FROM unnest($2::text[], $3::text[]) AS u(exit, step) JOIN ` + s.tables.Steps + ` s ON s.run_id = $1 AND s.node_id = u.step
		ON CONFLICT DO NOTHING`, []any{runID, loops, steps}
}

// completeSQL completes run $1: its final context (user keys, and each
// node's output — a loop's node's last — at _outputs.<id> and, as
// Flowcraft writes it, at the bare <id>)
// goes to the context row and, as Flowcraft's adapter does,
// to status_data.
func (s *Store) completeSQL() string {
	return `WITH latest AS (
			SELECT DISTINCT ON (coalesce(node, node_id)) coalesce(node, node_id) AS id, output
			FROM ` + s.tables.Steps + ` WHERE run_id = $1 AND state IN ('succeeded', 'recovered')
			ORDER BY coalesce(node, node_id), iteration DESC NULLS FIRST),
		outs AS (
			SELECT coalesce(jsonb_object_agg(k.key, coalesce(output, 'null'::jsonb)), '{}'::jsonb) AS o
			FROM latest, LATERAL (VALUES ('_outputs.' || id), (id)) AS k(key)),
		ctx AS (
			UPDATE ` + s.tables.Contexts + ` c SET context_data = c.context_data || outs.o FROM outs WHERE c.run_id = $1 RETURNING c.context_data)
		UPDATE ` + s.tables.Statuses + ` SET status = 'completed', pending = 0, finished_at = now(), updated_at = now(), error = NULL,
			status_data = coalesce((SELECT context_data FROM ctx), (SELECT o FROM outs))
		WHERE run_id = $1`
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
