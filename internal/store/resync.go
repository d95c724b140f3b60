package store

import (
	"context"
	"errors"
	"fmt"

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
// behind; a lost or hand-edited row can). Under the run's lock it reads
// every step row, and writes what workflow.DecideResync decides from
// them: the rows that are missing (ready or skipped), and the pending
// count — or, for a run with nothing left to run, its final status. It
// changes nothing of a run that is not running.
func (s *Store) ResyncRun(ctx context.Context, runID string, w *workflow.Workflow) (*Resynced, error) {
	res := &Resynced{}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var status string
		err := tx.QueryRow(ctx, `SELECT status FROM `+s.tables.Statuses+` WHERE run_id = $1 FOR UPDATE`, runID).Scan(&status)
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
		rows, err := tx.Query(ctx, `SELECT node_id, state, coalesce(taken, '{}'), deliveries, coalesce(error, '') FROM `+s.tables.Steps+` WHERE run_id = $1`, runID)
		if err != nil {
			return err
		}
		var steps []workflow.StoredStep
		awaiting := 0
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
			if st == workflow.StepAwaiting {
				awaiting++
			}
			states.rows[id] = &stateRow{status: workflow.StepStatus{State: st, Taken: taken}, deliveries: d}
			steps = append(steps, workflow.StoredStep{NodeID: id, State: st, Error: stepErr})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		d := w.DecideResync(steps, states) // every node is known: no reads
		if states.err != nil {
			return states.err
		}
		if len(d.Skipped) > 0 {
			if _, err := tx.Exec(ctx, s.skipSQL(),
				runID, d.Skipped); err != nil {
				return err
			}
			res.Skipped = d.Skipped
		}
		if len(d.Ready) > 0 {
			ids := make([]string, len(d.Ready))
			inputs := make([][]byte, len(d.Ready))
			for i, rn := range d.Ready {
				ids[i] = rn.ID
				if inputs[i], err = jsonArg(rn.Input); err != nil {
					return fmt.Errorf("encode input of %s: %w", rn.ID, err)
				}
			}
			// Under the run's lock, and with every row read, each is new.
			rows, err := tx.Query(ctx, s.readySQL(),
				runID, ids, inputs)
			if err != nil {
				return err
			}
			if res.Ready, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
		}
		// What is left may only await (wait nodes): the run is awaiting.
		res.Status, res.Pending = workflow.AwaitStatus(d.Status, d.Pending, awaiting), d.Pending
		switch res.Status {
		case workflow.RunRunning, workflow.RunAwaiting:
			_, err = tx.Exec(ctx, `UPDATE `+s.tables.Statuses+` SET status = $3, pending = $2, awaiting = $4, updated_at = now() WHERE run_id = $1`,
				runID, d.Pending, string(res.Status), awaiting)
		case workflow.RunFailed:
			_, err = tx.Exec(ctx, s.failSQL(),
				runID, d.Error, d.FailedNode)
		default:
			_, err = tx.Exec(ctx, s.completeSQL(), runID)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("resync run %s: %w", runID, err)
	}
	return res, nil
}
