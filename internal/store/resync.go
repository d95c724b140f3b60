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
	Ready   []string           // steps (keys) made ready (jobs to publish)
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
		// Every step is read: the states answer without further reads.
		states := s.newTxStates(ctx, nil, runID, w)
		states.complete = true
		rows, err := tx.Query(ctx, `SELECT `+stateColumns("$2")+`, coalesce(error, '') FROM `+s.tables.Steps+` WHERE run_id = $1`, runID, []string{})
		if err != nil {
			return err
		}
		var steps []workflow.StoredStep
		awaiting := 0
		for rows.Next() {
			var sc stateScan
			var stepErr string
			if err := rows.Scan(append(sc.dest(), &stepErr)...); err != nil {
				rows.Close()
				return err
			}
			r, err := states.row0(&sc)
			if err != nil {
				rows.Close()
				return err
			}
			if r.status.State == workflow.StepAwaiting {
				awaiting++
			}
			states.rows[sc.id] = r
			steps = append(steps, workflow.StoredStep{NodeID: sc.id, State: r.status.State, Error: stepErr})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// Subflows: a step whose child run awaits counts as awaiting
		// (migration 010), through parent_idx.
		var childrenAwaiting int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+s.tables.Statuses+` c JOIN `+s.tables.Steps+` p
				ON p.run_id = c.parent_run_id AND p.node_id = c.parent_step AND p.state = 'awaiting_child'
			WHERE c.parent_run_id = $1 AND c.status = 'awaiting'`, runID).Scan(&childrenAwaiting); err != nil {
			return err
		}
		awaiting += childrenAwaiting
		// The counts of resolved dynamic nodes are taken again from their
		// rows (a lost or hand-edited row may have left them off), and
		// stored so.
		for key, r := range states.rows {
			if len(r.status.Dynamic) == 0 {
				continue
			}
			counts := recount(r.status.Dynamic, states.rows)
			if !slices.Equal(counts, r.resolved) {
				r.resolved = counts
				if _, err := tx.Exec(ctx, `UPDATE `+s.tables.Steps+` SET dynamic_resolved = $3 WHERE run_id = $1 AND node_id = $2`, runID, key, counts); err != nil {
					return err
				}
			}
		}
		d := w.DecideResync(steps, states) // every step is known: no reads
		if states.err != nil {
			return states.err
		}
		if len(d.Skipped) > 0 {
			sql, args := s.skipStepsSQL(w, runID, d.Skipped)
			if _, err := tx.Exec(ctx, sql, args...); err != nil {
				return err
			}
			res.Skipped = d.Skipped
		}
		if len(d.LoopExits) > 0 {
			sql, args := s.loopExitsSQL(runID, d.LoopExits)
			if _, err := tx.Exec(ctx, sql, args...); err != nil {
				return err
			}
		}
		if len(d.Ready) > 0 {
			// Under the run's lock, and with every row read, each is new.
			sql, args, err := s.readyStepsSQL(w, runID, d.Ready)
			if err != nil {
				return err
			}
			rows, err := tx.Query(ctx, sql, args...)
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
				runID, d.Error, w.StepNode(d.FailedNode))
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

// recount counts, per wave, the dynamic nodes ds whose rows are resolved.
func recount(ds []workflow.DynamicNode, rows map[string]*stateRow) []int32 {
	var counts []int32
	for _, d := range ds {
		for len(counts) <= d.Wave {
			counts = append(counts, 0)
		}
		if r := rows[d.ID]; r != nil && r.status.State.Resolved() {
			counts[d.Wave]++
		}
	}
	return counts
}
