package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stepflow/stepflow/workflow"
)

// soleStates answers workflow.Advance for commitAlone: the committing
// step's own new status, and "no step yet" for a successor whose only
// predecessor is that step. Any other question marks the decision as
// needing the general path.
type soleStates struct {
	w          *workflow.Workflow
	me         string
	status     workflow.StepStatus
	deliveries map[string]any
	unknown    bool
}

func (t *soleStates) Status(id string) (workflow.StepStatus, bool) {
	if id == t.me {
		return t.status, true
	}
	if _, backs := t.w.BackedBy(id); !backs {
		preds := t.w.Predecessors(id)
		sole := len(preds) > 0
		for _, p := range preds {
			sole = sole && p == t.me
		}
		if sole {
			return workflow.StepStatus{}, false
		}
	}
	t.unknown = true
	return workflow.StepStatus{}, false
}

func (t *soleStates) Delivery(source, target string) any {
	if source == t.me {
		return t.deliveries[target]
	}
	t.unknown = true
	return nil
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
	b.Queue(`SELECT node_id, state, coalesce(taken, '{}'), deliveries FROM `+t.s.tables.Steps+` WHERE run_id = $1 AND node_id = ANY($2)`, t.runID, ids).Query(func(rows pgx.Rows) error {
		return t.scan(ids, rows)
	})
}

func (t *txStates) load(ids []string) error {
	rows, err := t.conn.Query(t.ctx, `SELECT node_id, state, coalesce(taken, '{}'), deliveries FROM `+t.s.tables.Steps+` WHERE run_id = $1 AND node_id = ANY($2)`, t.runID, ids)
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
