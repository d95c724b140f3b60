package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/stepflow/stepflow/workflow"
)

// Resynced is what ResyncRun decided.
type Resynced struct {
	Status  workflow.RunStatus // the run's status afterwards
	Ready   []string           // nodes made ready (jobs to publish)
	Skipped []string
	Pending int // steps pending afterwards
}

// ResyncRun rebuilds a running run's frontier from its step rows, for a
// run that is running with nothing pending (which no commit leaves
// behind; a lost or hand-edited row can). Under the run's lock it decides
// again, with workflow.Advance over every resolved step, which nodes are
// ready or skipped, inserts the rows that are missing, and sets the
// pending count from the rows. A run with nothing left to run is completed
// — or failed, when one of its steps failed or a fallback it waits for has
// no step. It changes nothing of a run that is not running.
func (s *Store) ResyncRun(ctx context.Context, runID string, w *workflow.Workflow) (*Resynced, error) {
	res := &Resynced{}
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var status string
		err := tx.QueryRow(ctx, `SELECT status FROM `+s.T.Statuses+` WHERE run_id = $1 FOR UPDATE`, runID).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("run %s: %w", runID, ErrRunNotFound)
		}
		if err != nil {
			return err
		}
		res.Status = workflow.RunStatus(status)
		if res.Status != workflow.RunRunning {
			return nil
		}
		states := &txStates{s: s, ctx: ctx, runID: runID, rows: map[string]*stateRow{}}
		for _, id := range w.NodeIDs() {
			states.rows[id] = nil // no step unless read below
		}
		rows, err := tx.Query(ctx, `SELECT node_id, state, coalesce(taken, '{}'), deliveries, coalesce(error, '') FROM `+s.T.Steps+` WHERE run_id = $1`, runID)
		if err != nil {
			return err
		}
		var resolved []string
		var failed, failedError string
		var awaiting []string
		for rows.Next() {
			var id, state, stepErr string
			var taken []string
			var deliveries []byte
			if err := rows.Scan(&id, &state, &taken, &deliveries, &stepErr); err != nil {
				rows.Close()
				return err
			}
			d, _ := decodeJSON(deliveries).(map[string]any)
			st := workflow.StepState(state)
			states.rows[id] = &stateRow{status: workflow.StepStatus{State: st, Taken: taken}, deliveries: d}
			switch {
			case st.Resolved():
				resolved = append(resolved, id)
			case st == workflow.StepFailed && failed == "":
				failed, failedError = id, stepErr
			case st == workflow.StepAwaitingFallback:
				awaiting = append(awaiting, id)
			case st == workflow.StepReady || st == workflow.StepRetrying || st == workflow.StepSleeping:
				res.Pending++
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		slices.Sort(resolved)             // a stable order of decisions
		tr := w.Advance(resolved, states) // every node is known: no reads
		if states.err != nil {
			return states.err
		}
		for _, id := range awaiting {
			if n, ok := w.Node(id); ok && n.Fallback != "" {
				if r := states.rows[n.Fallback]; r != nil && r.status.State.Pending() {
					continue // counted above
				}
			}
			if failed == "" {
				failed, failedError = id, "its fallback has no step"
			}
		}
		if len(tr.Skipped) > 0 {
			if _, err := tx.Exec(ctx, s.skipSQL(),
				runID, tr.Skipped); err != nil {
				return err
			}
			res.Skipped = tr.Skipped
		}
		if len(tr.Ready) > 0 {
			ids := make([]string, len(tr.Ready))
			inputs := make([][]byte, len(tr.Ready))
			for i, rn := range tr.Ready {
				ids[i] = rn.ID
				if inputs[i], err = jsonArg(rn.Input); err != nil {
					return fmt.Errorf("encode input of %s: %w", rn.ID, err)
				}
			}
			rows, err := tx.Query(ctx, s.readySQL(),
				runID, ids, inputs)
			if err != nil {
				return err
			}
			if res.Ready, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
			res.Pending += len(res.Ready)
		}
		switch {
		case res.Pending > 0:
			_, err = tx.Exec(ctx, `UPDATE `+s.T.Statuses+` SET pending = $2, updated_at = now() WHERE run_id = $1`, runID, res.Pending)
		case failed != "":
			msg := fmt.Sprintf("node %s failed: %s", failed, failedError)
			_, err = tx.Exec(ctx, s.failSQL(),
				runID, msg, failed)
			res.Status = workflow.RunFailed
		default:
			_, err = tx.Exec(ctx, s.completeSQL(), runID)
			res.Status = workflow.RunCompleted
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("resync run %s: %w", runID, err)
	}
	return res, nil
}
