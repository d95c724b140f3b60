package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stepflow/stepflow/workflow"
)

// StepLoad is what a step needs before it runs, read in one round trip.
type StepLoad struct {
	Run     *Run           // nil: no such run
	Step    *Step          // nil: the node has no step (yet)
	Context map[string]any // the run's context keys
}

// LoadStep reads the run, the step of nodeID and the run's context in one
// round trip.
func (s *Store) LoadStep(ctx context.Context, runID, nodeID string) (*StepLoad, error) {
	b := &pgx.Batch{}
	var ld StepLoad
	b.Queue(`SELECT `+runColumns+` FROM `+s.T.Statuses+` WHERE run_id = $1`, runID).QueryRow(func(row pgx.Row) error {
		r, err := scanRun(row)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		ld.Run = r
		return err
	})
	b.Queue(`SELECT `+stepColumns+` FROM `+s.T.Steps+` WHERE run_id = $1 AND node_id = $2`, runID, nodeID).QueryRow(func(row pgx.Row) error {
		st, err := scanStep(row)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		ld.Step = st
		return err
	})
	b.Queue(`SELECT context_data FROM `+s.T.Contexts+` WHERE run_id = $1`, runID).QueryRow(func(row pgx.Row) error {
		var data []byte
		err := row.Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		ld.Context, _ = decodeJSON(data).(map[string]any)
		return err
	})
	if err := s.Pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("load step %s/%s: %w", runID, nodeID, err)
	}
	if ld.Context == nil {
		ld.Context = map[string]any{}
	}
	return &ld, nil
}

// Outputs reads the outputs of the given finished nodes (all finished
// nodes when ids is nil).
func (s *Store) Outputs(ctx context.Context, q Querier, runID string, ids []string) (map[string]any, error) {
	if q == nil {
		q = s.Pool
	}
	sql := `SELECT node_id, output FROM ` + s.T.Steps + ` WHERE run_id = $1 AND state IN ('succeeded', 'recovered')`
	args := []any{runID}
	if ids != nil {
		if len(ids) == 0 {
			return map[string]any{}, nil
		}
		sql += ` AND node_id = ANY($2)`
		args = append(args, ids)
	}
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("load outputs of %s: %w", runID, err)
	}
	defer rows.Close()
	out := map[string]any{}
	for rows.Next() {
		var id string
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			return nil, err
		}
		out[id] = decodeJSON(b)
	}
	return out, rows.Err()
}

// Outcome is the result of one attempt of one step, to be committed.
type Outcome struct {
	RunID  string
	NodeID string
	// LoadedAttempts is the step's attempts when it was loaded: the commit
	// applies only if nobody finished the attempt meanwhile.
	LoadedAttempts int
	State          workflow.StepState // succeeded, retrying, sleeping, awaiting_fallback, failed
	Attempts       int
	Result         workflow.NodeResult
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
}

// Committed is what a commit decided.
type Committed struct {
	Applied   bool               // false: the run is not running or the step was already finished
	RunStatus workflow.RunStatus // the run's status after the commit
	Ready     []string           // nodes made ready by this commit (jobs to publish)
	Skipped   []string
}

// CommitStep applies an outcome in one transaction: the step's result and
// routing, context changes, the successors it makes ready (each exactly
// once), skips, and the run's bookkeeping (pending count, final status when
// nothing is pending).
//
// Every commit of a run first locks the run's status row (FOR UPDATE), so the commits
// of one run are serialised and a join sees every predecessor's committed
// result. The transaction takes two round trips: one pipelined batch locks
// the run, updates the step and reads the rows the join and skip decisions
// need; the decision is made here (workflow.Advance); a second batch writes
// its consequences and commits.
func (s *Store) CommitStep(ctx context.Context, w *workflow.Workflow, o Outcome) (*Committed, error) {
	res, err := s.commitStep(ctx, w, o)
	if err != nil {
		return nil, fmt.Errorf("commit step %s/%s: %w", o.RunID, o.NodeID, err)
	}
	return res, nil
}

func (s *Store) commitStep(ctx context.Context, w *workflow.Workflow, o Outcome) (_ *Committed, err error) {
	output, err := jsonArg(o.Result.Output)
	if err != nil {
		return nil, fmt.Errorf("encode output of %s: %w", o.NodeID, err)
	}
	deliveries, err := jsonArg(o.Routing.Deliveries)
	if err != nil {
		return nil, fmt.Errorf("encode deliveries of %s: %w", o.NodeID, err)
	}
	var contextSet []byte
	if len(o.ContextSet) > 0 || len(o.ContextDeleted) > 0 {
		if contextSet, err = jsonArg(nonNilMap(o.ContextSet)); err != nil {
			return nil, fmt.Errorf("encode context changes of %s: %w", o.NodeID, err)
		}
	}
	var finished *time.Time
	if o.State.Terminal() || o.State == workflow.StepAwaitingFallback {
		finished = &o.FinishedAt
	}
	resolved := []string{}
	if o.State.Resolved() {
		resolved = append(resolved, o.NodeID)
	}
	recovered := make([]string, 0, len(o.Recovered))
	for backed := range o.Recovered {
		recovered = append(recovered, backed)
	}

	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return nil, err
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

	// Round trip 1: lock the run, finish the step (only if unfinished at
	// the attempt loaded), recover the nodes a fallback stands in for,
	// apply context changes, and read what Advance will ask about.
	res := &Committed{}
	var status string
	var pending int
	var applied bool
	recoveredApplied := map[string]bool{}
	states := &txStates{s: s, conn: conn, ctx: ctx, runID: o.RunID, rows: map[string]*stateRow{}}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(`SELECT status, pending FROM `+s.T.Statuses+` WHERE run_id = $1 FOR UPDATE`, o.RunID).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&status, &pending)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("run %s: %w", o.RunID, ErrRunNotFound)
		}
		return err
	})
	b.Queue(`UPDATE `+s.T.Steps+` SET state = $3, attempts = $4, output = $5, action = nullif($6, ''), taken = $7, deliveries = $8, error = nullif($9, ''), wake_at = $10,
			started_at = coalesce(started_at, $11), finished_at = $12, updated_at = now()
			WHERE run_id = $1 AND node_id = $2 AND state IN ('ready', 'retrying', 'sleeping') AND attempts = $13`,
		o.RunID, o.NodeID, string(o.State), o.Attempts, output, o.Result.Action, nonNil(o.Routing.Taken), deliveries, o.Error, o.WakeAt,
		o.StartedAt, finished, o.LoadedAttempts).Exec(func(tag pgconn.CommandTag) error {
		applied = tag.RowsAffected() > 0
		return nil
	})
	for _, backed := range recovered {
		routing := o.Recovered[backed]
		d, err := jsonArg(routing.Deliveries)
		if err != nil {
			return nil, err
		}
		b.Queue(`UPDATE `+s.T.Steps+` SET state = 'recovered', output = $3, action = nullif($4, ''), taken = $5, deliveries = $6, updated_at = now()
				WHERE run_id = $1 AND node_id = $2 AND state = 'awaiting_fallback'`,
			o.RunID, backed, output, o.Result.Action, nonNil(routing.Taken), d).Exec(func(tag pgconn.CommandTag) error {
			recoveredApplied[backed] = tag.RowsAffected() > 0
			return nil
		})
	}
	if contextSet != nil {
		b.Queue(`UPDATE `+s.T.Contexts+` SET context_data = (context_data - $2::text[]) || $3::jsonb WHERE run_id = $1`,
			o.RunID, nonNil(o.ContextDeleted), contextSet)
	}
	advancing := append(append([]string{}, resolved...), recovered...)
	if len(advancing) > 0 {
		states.queuePrefetch(b, w, advancing)
	}
	inTx = true
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	res.RunStatus = workflow.RunStatus(status)
	if res.RunStatus != workflow.RunRunning || !applied {
		return res, nil // rolled back by the deferred ROLLBACK
	}
	res.Applied = true
	for _, backed := range recovered {
		if recoveredApplied[backed] {
			resolved = append(resolved, backed)
		}
	}

	// Decide, then round trip 2: write the consequences and commit.
	b = &pgx.Batch{}
	delta := 0
	if o.State != workflow.StepRetrying && o.State != workflow.StepSleeping {
		delta-- // this step is no longer pending
	}
	if o.State == workflow.StepFailed {
		b.Queue(`UPDATE `+s.T.Statuses+` SET status = 'failed', error = $2, status_data = jsonb_build_object('error', $2::text, 'nodeId', $3::text), pending = 0, finished_at = now(), updated_at = now() WHERE run_id = $1`,
			o.RunID, o.Error, o.NodeID)
		res.RunStatus = workflow.RunFailed
	} else {
		var readyIDs []string
		var readyInputs [][]byte
		if o.Fallback != "" {
			in, err := jsonArg(o.FallbackInput)
			if err != nil {
				return nil, err
			}
			readyIDs, readyInputs = append(readyIDs, o.Fallback), append(readyInputs, in)
		}
		if len(resolved) > 0 {
			tr := w.Advance(resolved, states)
			if states.err != nil {
				return nil, states.err
			}
			for _, rn := range tr.Ready {
				in, err := jsonArg(rn.Input)
				if err != nil {
					return nil, err
				}
				readyIDs, readyInputs = append(readyIDs, rn.ID), append(readyInputs, in)
			}
			if len(tr.Skipped) > 0 {
				b.Queue(`INSERT INTO `+s.T.Steps+` (run_id, node_id, state, finished_at) SELECT $1, unnest($2::text[]), 'skipped', now() ON CONFLICT DO NOTHING`,
					o.RunID, tr.Skipped)
				res.Skipped = tr.Skipped
			}
		}
		if len(readyIDs) > 0 {
			// Under the run's lock no other commit inserts this run's rows,
			// and Advance only names nodes without one: every row is new.
			b.Queue(`INSERT INTO `+s.T.Steps+` (run_id, node_id, state, input) SELECT $1, n, 'ready', i FROM unnest($2::text[], $3::jsonb[]) AS u(n, i) ON CONFLICT DO NOTHING RETURNING node_id`,
				o.RunID, readyIDs, readyInputs).Query(func(rows pgx.Rows) error {
				ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
				res.Ready = ids
				return err
			})
		}
		pending += delta + len(readyIDs)
		if pending > 0 {
			// Touching updated_at is what tells the reconciler the run moves.
			b.Queue(`UPDATE `+s.T.Statuses+` SET pending = $2, updated_at = now() WHERE run_id = $1`, o.RunID, pending)
		} else {
			// Nothing pending: the run is complete. Its final context (user
			// keys and _outputs.<id>) goes to the context row and, as
			// Flowcraft's adapter does, to status_data.
			b.Queue(`WITH outs AS (
					SELECT coalesce(jsonb_object_agg('_outputs.' || node_id, coalesce(output, 'null'::jsonb)), '{}'::jsonb) AS o
					FROM `+s.T.Steps+` WHERE run_id = $1 AND state IN ('succeeded', 'recovered')),
				ctx AS (
					UPDATE `+s.T.Contexts+` c SET context_data = c.context_data || outs.o FROM outs WHERE c.run_id = $1 RETURNING c.context_data)
				UPDATE `+s.T.Statuses+` SET status = 'completed', pending = 0, finished_at = now(), updated_at = now(), error = NULL,
					status_data = coalesce((SELECT context_data FROM ctx), (SELECT o FROM outs))
				WHERE run_id = $1`, o.RunID)
			res.RunStatus = workflow.RunCompleted
		}
	}
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	inTx = false
	return res, nil
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

type stateRow struct {
	status     workflow.StepStatus
	deliveries map[string]any
}

// txStates serves workflow.Advance from the committing transaction: rows
// are prefetched for the likely questions and read on demand otherwise.
type txStates struct {
	s     *Store
	conn  *pgxpool.Conn // inside the committing transaction
	ctx   context.Context
	runID string
	rows  map[string]*stateRow // nil value: no step
	err   error
}

// queuePrefetch adds to b the read of every row Advance is likely to ask
// about: the successors of the resolved nodes and their predecessors.
func (t *txStates) queuePrefetch(b *pgx.Batch, w *workflow.Workflow, resolved []string) {
	want := map[string]bool{}
	for _, id := range resolved {
		for _, succ := range w.Successors(id) {
			want[succ] = true
			for _, p := range w.Predecessors(succ) {
				want[p] = true
			}
		}
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	t.queueLoad(b, ids)
}

func (t *txStates) queueLoad(b *pgx.Batch, ids []string) {
	b.Queue(`SELECT node_id, state, coalesce(taken, '{}'), deliveries FROM `+t.s.T.Steps+` WHERE run_id = $1 AND node_id = ANY($2)`, t.runID, ids).Query(func(rows pgx.Rows) error {
		return t.scan(ids, rows)
	})
}

func (t *txStates) load(ids []string) error {
	rows, err := t.conn.Query(t.ctx, `SELECT node_id, state, coalesce(taken, '{}'), deliveries FROM `+t.s.T.Steps+` WHERE run_id = $1 AND node_id = ANY($2)`, t.runID, ids)
	if err != nil {
		return fmt.Errorf("load step states: %w", err)
	}
	return t.scan(ids, rows)
}

func (t *txStates) scan(ids []string, rows pgx.Rows) error {
	defer rows.Close()
	for _, id := range ids {
		t.rows[id] = nil
	}
	for rows.Next() {
		var id, state string
		var taken []string
		var deliveries []byte
		if err := rows.Scan(&id, &state, &taken, &deliveries); err != nil {
			return err
		}
		d, _ := decodeJSON(deliveries).(map[string]any)
		t.rows[id] = &stateRow{status: workflow.StepStatus{State: workflow.StepState(state), Taken: taken}, deliveries: d}
	}
	return rows.Err()
}

func (t *txStates) row(id string) *stateRow {
	r, known := t.rows[id]
	if !known && t.err == nil {
		if err := t.load([]string{id}); err != nil {
			t.err = err
			return nil
		}
		r = t.rows[id]
	}
	return r
}

func (t *txStates) Status(id string) (workflow.StepStatus, bool) {
	r := t.row(id)
	if r == nil {
		return workflow.StepStatus{}, false
	}
	return r.status, true
}

func (t *txStates) Delivery(source, target string) any {
	if r := t.row(source); r != nil {
		return r.deliveries[target]
	}
	return nil
}
