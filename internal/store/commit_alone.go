package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/stepflow/stepflow/workflow"
)

// commitAlone commits one succeeded step in one statement — one round
// trip, its own transaction — when its consequences can be decided without
// reading any other step: every node Advance asks about is the step itself
// or a successor whose only predecessor it is (so no other commit can have
// made it ready), as along a chain or out of a fork. That is a single
// step's usual case, and it halves the commit's latency. It makes at least
// one node ready, so the run cannot finish; should the statement find
// nothing pending after all, it fails on purpose and rolls back. done is
// false when the step needs the general path.
func (s *Store) commitAlone(ctx context.Context, p *pending) (done bool, err error) {
	o, w := &p.c.O, p.c.W
	if o.State != workflow.StepSucceeded || len(p.recovered) > 0 || o.WebhookHash != nil ||
		len(o.Routing.Dynamic) > 0 || o.Routing.Gather != "" || o.Definition != nil {
		return false, nil // dynamic nodes are kept and counted by the general path
	}
	known := &soleStates{w: w, me: o.NodeID, status: workflow.StepStatus{State: o.State, Taken: o.Routing.Taken}, deliveries: o.Routing.Deliveries}
	tr := w.Advance([]string{o.NodeID}, known)
	if known.unknown || len(tr.Ready) == 0 {
		return false, nil
	}
	readyIDs := make([]string, len(tr.Ready))
	readyInputs := make([][]byte, len(tr.Ready))
	for i, rn := range tr.Ready {
		readyIDs[i] = rn.ID
		if readyInputs[i], err = jsonArg(rn.Input); err != nil {
			return true, fmt.Errorf("encode input of %s: %w", rn.ID, err)
		}
	}
	args := []any{o.RunID, o.NodeID, string(o.State), o.Attempts, p.output, o.Result.Action, nonNil(o.Routing.Taken), p.deliveries, o.Error, o.WakeAt,
		o.StartedAt, p.finished, o.LoadedAttempts}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var sql strings.Builder
	// The run's status is read by the locking CTE: after waiting for the
	// lock it is the latest, where a plain read would see the statement's
	// snapshot from before the wait.
	sql.WriteString(`WITH run AS (
			SELECT run_id, status FROM ` + s.tables.Statuses + ` WHERE run_id = $1 FOR UPDATE),
		me AS (
			UPDATE ` + s.tables.Steps + ` SET state = $3, attempts = $4, output = $5, action = nullif($6, ''), taken = $7, deliveries = $8, error = nullif($9, ''), wake_at = $10,
				started_at = coalesce(started_at, $11), finished_at = $12, updated_at = now()
			WHERE run_id = $1 AND node_id = $2 AND state IN ('ready', 'retrying', 'sleeping', 'awaiting_child') AND attempts = $13 AND EXISTS (SELECT 1 FROM run WHERE status = 'running')
			RETURNING node_id),`)
	if len(readyIDs) == 1 { // no arrays for a chain's next step (see LoadSteps)
		sql.WriteString(`
		ready AS (
			INSERT INTO ` + s.tables.Steps + ` (run_id, node_id, state, input) SELECT $1, ` + arg(readyIDs[0]) + `::text, 'ready', ` + arg(readyInputs[0]) + `::jsonb
			WHERE EXISTS (SELECT 1 FROM me) ON CONFLICT DO NOTHING RETURNING node_id),`)
	} else {
		sql.WriteString(`
		ready AS (
			INSERT INTO ` + s.tables.Steps + ` (run_id, node_id, state, input) SELECT $1, n, 'ready', i FROM unnest(` + arg(readyIDs) + `::text[], ` + arg(readyInputs) + `::jsonb[]) AS u(n, i)
			WHERE EXISTS (SELECT 1 FROM me) ON CONFLICT DO NOTHING RETURNING node_id),`)
	}
	if len(tr.Skipped) > 0 {
		sql.WriteString(`
		skipped AS (
			INSERT INTO ` + s.tables.Steps + ` (run_id, node_id, state, finished_at) SELECT $1, unnest(` + arg(tr.Skipped) + `::text[]), 'skipped', now()
			WHERE EXISTS (SELECT 1 FROM me) ON CONFLICT DO NOTHING),`)
	}
	if p.contextSet != nil {
		sql.WriteString(`
		ctx AS (
			UPDATE ` + s.tables.Contexts + ` SET context_data = (context_data - ` + arg(nonNil(o.ContextDeleted)) + `::text[]) || ` + arg(p.contextSet) + `::jsonb
			WHERE run_id = $1 AND EXISTS (SELECT 1 FROM me)),`)
	}
	// Touching updated_at is what tells the reconciler the run moves.
	sql.WriteString(`
		counted AS (
			UPDATE ` + s.tables.Statuses + ` SET pending = pending - 1 + (SELECT count(*) FROM ready), updated_at = now()
			WHERE run_id = $1 AND EXISTS (SELECT 1 FROM me) RETURNING pending)
		SELECT (SELECT status FROM run), EXISTS (SELECT 1 FROM me), ARRAY(SELECT node_id FROM ready),
			CASE WHEN (SELECT pending FROM counted) <= 0 THEN 1 / (SELECT 0) END`)
	var status *string
	var applied bool
	var ready []string
	var assert *int
	err = s.pool.QueryRow(ctx, sql.String(), args...).Scan(&status, &applied, &ready, &assert)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "22012" {
		return false, nil // nothing pending after all: rolled back; the general path completes the run
	}
	if err != nil {
		return true, err
	}
	if status == nil {
		return true, fmt.Errorf("run %s: %w", o.RunID, ErrRunNotFound)
	}
	res := &Committed{RunStatus: workflow.RunStatus(*status)}
	if applied && res.RunStatus == workflow.RunRunning {
		res.Applied, res.Ready = true, ready
		if len(tr.Skipped) > 0 {
			res.Skipped = tr.Skipped
		}
	}
	p.c.Res = res
	return true, nil
}
