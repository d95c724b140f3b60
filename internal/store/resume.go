package store

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stepflow/stepflow/workflow"
)

// ErrNotAwaiting is returned for a resume of a step that does not await
// (not reached yet, resumed already, not a wait node) or of a run that
// is not running or awaiting; the message says which. Nothing changed.
var ErrNotAwaiting = errors.New("not awaiting")

// ErrInvalidResume is returned for a resume that names no node of the
// run's blueprint, or whose output the wait node's edges cannot route (a
// condition that fails on it). Nothing changed.
var ErrInvalidResume = errors.New("invalid resume")

// ResumeRequest resumes a run at an awaiting step.
type ResumeRequest struct {
	RunID  string
	Resume workflow.Resume
	// Webhook, when set, is the webhook step whose endpoint was called,
	// with Token from its URL: the step resumed is its wait step
	// (workflow.WebhookWait), and Resume.Node is ignored. The endpoint is
	// used up by the resume.
	Webhook string
	Token   string
}

// Resumed is what a resume committed.
type Resumed struct {
	Node      string             // the step resumed
	RunStatus workflow.RunStatus // the run's status afterwards
	Ready     []string           // steps made ready (jobs to publish)
	Skipped   []string
	// Finished: the resume gave the run its final status (the wait node
	// was the last to finish).
	Finished bool
	// Continue, with Finished, for a child run: its parent's step to run
	// again (subflows: children.go).
	Continue *Continuation
}

// Resume resumes run req.RunID, of the compiled workflow w (its pinned
// blueprint), at an awaiting step, in one transaction: it locks the run's
// status row and the step's row, records the resume's output and action
// as the step's result with the routing the workflow decides
// (workflow.ResumeStep), makes ready what that routing leads to (each
// step exactly once, as a commit does: workflow.DecideRun), and sets the
// run running (or awaiting, when what follows awaits too, or completed).
// The caller publishes the ready steps' jobs after it returns.
//
// Resumes of one run are serialised by the status row's lock, so of two
// resumes of one step the second finds it succeeded and gets
// ErrNotAwaiting. A run that does not exist gets ErrRunNotFound; a webhook
// whose token does not match gets ErrWebhookNotFound, one used already
// ErrWebhookUsed. A refused resume changes nothing.
func (s *Store) Resume(ctx context.Context, w *workflow.Workflow, req ResumeRequest) (*Resumed, error) {
	r := req.Resume
	if req.Webhook != "" {
		key, ok := w.WebhookWait(req.Webhook)
		if !ok {
			return nil, fmt.Errorf("run %s, webhook %s: %w", req.RunID, req.Webhook, ErrWebhookNotFound)
		}
		r.Node = key
	}
	res, err := s.resume(ctx, w, req, r)
	if err != nil {
		return nil, fmt.Errorf("resume run %s at %s: %w", req.RunID, r.Node, err)
	}
	return res, nil
}

func (s *Store) resume(ctx context.Context, w *workflow.Workflow, req ResumeRequest, r workflow.Resume) (_ *Resumed, err error) {
	runID := req.RunID
	var refs []string // outputs the wait node's edges read; nil: all
	if step, ok := w.Step(r.Node); ok && !step.Node.AllOutputs {
		refs = append([]string{}, step.Node.OutputRefs...)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	inTx := false
	defer func() {
		if inTx {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = conn.Exec(rctx, "ROLLBACK")
			cancel()
		}
	}()

	// Round trip 1: lock the run and the step, read the webhook's token
	// hash and what the routing reads.
	var (
		status, digest   string
		pendingN, waitN  int
		locked           bool
		stepState        string
		stepFound        bool
		hookHash         []byte
		hookUsed         *time.Time
		hookFound        bool
		contextData      map[string]any
		outputs          = map[string]any{}
		outputsSQL, args = `SELECT node_id, output FROM ` + s.tables.Steps + ` WHERE run_id = $1 AND state IN ('succeeded', 'recovered')`, []any{runID}
	)
	if refs != nil {
		outputsSQL += ` AND node_id = ANY($2)`
		args = append(args, refs)
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(`SELECT status, pending, awaiting, coalesce(blueprint_digest, '') FROM `+s.tables.Statuses+` WHERE run_id = $1 FOR UPDATE`, runID).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&status, &pendingN, &waitN, &digest)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		locked = err == nil
		return err
	})
	b.Queue(`SELECT state FROM `+s.tables.Steps+` WHERE run_id = $1 AND node_id = $2 FOR UPDATE`, runID, r.Node).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&stepState)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		stepFound = err == nil
		return err
	})
	if req.Webhook != "" {
		b.Queue(`SELECT webhook_hash, webhook_used_at FROM `+s.tables.Steps+` WHERE run_id = $1 AND node_id = $2 AND state = 'succeeded' FOR UPDATE`, runID, req.Webhook).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&hookHash, &hookUsed)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			hookFound = err == nil
			return err
		})
	}
	b.Queue(`SELECT context_data FROM `+s.tables.Contexts+` WHERE run_id = $1`, runID).QueryRow(func(row pgx.Row) error {
		var data []byte
		err := row.Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		contextData, _ = decodeJSON(data).(map[string]any)
		return err
	})
	b.Queue(outputsSQL, args...).Query(func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var id string
			var out []byte
			if err := rows.Scan(&id, &out); err != nil {
				return err
			}
			outputs[id] = decodeJSON(out)
		}
		return rows.Err()
	})
	inTx = true
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}

	// Decide.
	switch st := workflow.RunStatus(status); {
	case !locked:
		return nil, fmt.Errorf("run %s: %w", runID, ErrRunNotFound)
	case req.Webhook != "" && !webhookMatches(hookFound, hookHash, req.Token):
		return nil, fmt.Errorf("run %s, webhook %s: %w", runID, req.Webhook, ErrWebhookNotFound)
	case req.Webhook != "" && hookUsed != nil:
		return nil, fmt.Errorf("run %s, webhook %s: %w (at %s)", runID, req.Webhook, ErrWebhookUsed, hookUsed.UTC().Format(time.RFC3339))
	case st != workflow.RunRunning && st != workflow.RunAwaiting:
		return nil, marked(ErrNotAwaiting, fmt.Errorf("run %s is %s: it does not await a resume", runID, st))
	case digest != w.Digest:
		return nil, fmt.Errorf("run %s runs blueprint %s, not %s", runID, digest, w.Digest)
	}
	if contextData == nil {
		contextData = map[string]any{}
	}
	for id, v := range outputs {
		contextData[workflow.OutputKey(id)] = v
	}
	result, routing, err := w.ResumeStep(workflow.StepStatus{State: workflow.StepState(stepState)}, stepFound, r, workflow.Env{Context: contextData, Outputs: outputs})
	switch {
	case errors.Is(err, workflow.ErrNotAwaiting):
		return nil, marked(ErrNotAwaiting, err)
	case err != nil:
		return nil, marked(ErrInvalidResume, err)
	}
	output, err := jsonArg(result.Output)
	if err != nil {
		return nil, marked(ErrInvalidResume, fmt.Errorf("encode output: %w", err))
	}
	deliveries, err := jsonArg(routing.Deliveries)
	if err != nil {
		return nil, marked(ErrInvalidResume, fmt.Errorf("encode deliveries: %w", err))
	}

	// Round trip 2: finish the step (and use up the webhook), then read
	// what Advance asks about.
	p := &pending{c: &Commit{W: w, O: Outcome{RunID: runID, NodeID: r.Node, State: workflow.StepSucceeded, Result: result, Routing: routing}},
		applied: true, recoveredApplied: map[string]bool{}}
	// The status row is locked: the run is resumed as running, and its
	// step no longer awaits.
	g := &runGroup{runID: runID, w: w, ps: []*pending{p}, status: string(workflow.RunRunning), pending: pendingN, awaiting: max(waitN-1, 0), stored: waitN, locked: true,
		states: s.newTxStates(ctx, conn, runID, w)}
	b = &pgx.Batch{}
	b.Queue(`UPDATE `+s.tables.Steps+` SET state = 'succeeded', output = $3, action = nullif($4, ''), taken = $5, deliveries = $6, error = NULL,
			finished_at = now(), updated_at = now() WHERE run_id = $1 AND node_id = $2 AND state = 'awaiting'`,
		runID, r.Node, output, result.Action, nonNil(routing.Taken), deliveries)
	if req.Webhook != "" {
		b.Queue(`UPDATE `+s.tables.Steps+` SET webhook_used_at = now() WHERE run_id = $1 AND node_id = $2`, runID, req.Webhook)
	}
	g.states.fresh[r.Node] = true
	g.states.queuePrefetch(b, []string{r.Node})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}

	// Round trip 3: what the decision writes, and commit.
	b = &pgx.Batch{}
	if err := s.decide(b, g); err != nil {
		return nil, err
	}
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	inTx = false
	c := p.c.Res
	return &Resumed{Node: r.Node, RunStatus: c.RunStatus, Ready: c.Ready, Skipped: c.Skipped, Finished: c.Finished, Continue: c.Continue}, nil
}

// markedError is err, which errors.Is is as well, without repeating its
// text.
type markedError struct{ is, err error }

func (e *markedError) Error() string   { return e.err.Error() }
func (e *markedError) Unwrap() []error { return []error{e.is, e.err} }

func marked(is, err error) error { return &markedError{is: is, err: err} }

// webhookMatches compares the token of a request with the stored hash, in
// constant time.
func webhookMatches(found bool, hash []byte, token string) bool {
	return found && subtle.ConstantTimeCompare(HashWebhookToken(token), hash) == 1
}
