package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// StepLoad is what a step needs before it runs.
type StepLoad struct {
	Run     *Run           // nil: no such run
	Step    *Step          // nil: the node has no step (yet)
	Context map[string]any // the run's context keys
}

// StepKey names one step of a run: NodeID is its step key (the node id
// outside loops; see workflow.Step).
type StepKey struct{ RunID, NodeID string }

// LoadStep reads the run, the step with key nodeID and the run's context
// in one round trip.
func (s *Store) LoadStep(ctx context.Context, runID, nodeID string) (*StepLoad, error) {
	lds, err := s.LoadSteps(ctx, []StepKey{{runID, nodeID}})
	if err != nil {
		return nil, err
	}
	return lds[0], nil
}

// LoadSteps reads, for every key, its run, its step and its run's context:
// three statements in one round trip, whatever the number of keys. The
// result is in the order of keys; keys of one run share its Run and Context
// values (read-only).
func (s *Store) LoadSteps(ctx context.Context, keys []StepKey) ([]*StepLoad, error) {
	runIDs := make([]string, 0, len(keys))
	nodeIDs := make([]string, 0, len(keys))
	seen := make(map[string]bool, len(keys))
	var uniq []string
	for _, k := range keys {
		runIDs, nodeIDs = append(runIDs, k.RunID), append(nodeIDs, k.NodeID)
		if !seen[k.RunID] {
			seen[k.RunID] = true
			uniq = append(uniq, k.RunID)
		}
	}
	runs := make(map[string]*Run, len(uniq))
	steps := make(map[StepKey]*Step, len(keys))
	contexts := make(map[string]map[string]any, len(uniq))
	// One key (the bridge sent one job) is read with plain equalities:
	// array parameters cost the server more to plan and run, which shows
	// on a single step's latency.
	runsSQL := `SELECT ` + runColumns + ` FROM ` + s.tables.Statuses + ` WHERE run_id = ANY($1)`
	stepsSQL := `SELECT s.run_id, ` + stepColumns + ` FROM ` + s.tables.Steps + ` s JOIN unnest($1::text[], $2::text[]) AS k(run_id, node_id) USING (run_id, node_id)`
	contextsSQL := `SELECT run_id, context_data FROM ` + s.tables.Contexts + ` WHERE run_id = ANY($1)`
	runsArg, runIDsArg, nodeIDsArg := any(uniq), any(runIDs), any(nodeIDs)
	if len(keys) == 1 {
		runsSQL = `SELECT ` + runColumns + ` FROM ` + s.tables.Statuses + ` WHERE run_id = $1`
		stepsSQL = `SELECT run_id, ` + stepColumns + ` FROM ` + s.tables.Steps + ` WHERE run_id = $1 AND node_id = $2`
		contextsSQL = `SELECT run_id, context_data FROM ` + s.tables.Contexts + ` WHERE run_id = $1`
		runsArg, runIDsArg, nodeIDsArg = keys[0].RunID, keys[0].RunID, keys[0].NodeID
	}
	b := &pgx.Batch{}
	b.Queue(runsSQL, runsArg).Query(func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			r, err := scanRun(rows)
			if err != nil {
				return err
			}
			runs[r.RunID] = r
		}
		return rows.Err()
	})
	b.Queue(stepsSQL, runIDsArg, nodeIDsArg).Query(func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var runID string
			var sc stepScan
			if err := rows.Scan(append([]any{&runID}, sc.dest()...)...); err != nil {
				return err
			}
			st := sc.step()
			steps[StepKey{runID, st.NodeID}] = st
		}
		return rows.Err()
	})
	b.Queue(contextsSQL, runsArg).Query(func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var runID string
			var data []byte
			if err := rows.Scan(&runID, &data); err != nil {
				return err
			}
			m, _ := decodeJSON(data).(map[string]any)
			contexts[runID] = m
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		if len(keys) == 1 {
			return nil, fmt.Errorf("load step %s/%s: %w", keys[0].RunID, keys[0].NodeID, err)
		}
		return nil, fmt.Errorf("load %d steps: %w", len(keys), err)
	}
	out := make([]*StepLoad, len(keys))
	for i, k := range keys {
		c := contexts[k.RunID]
		if c == nil {
			c = map[string]any{}
		}
		out[i] = &StepLoad{Run: runs[k.RunID], Step: steps[k], Context: c}
	}
	return out, nil
}

// Outputs reads the outputs of the given finished nodes (all finished
// nodes when ids is nil), by node id: for a loop's node, its latest
// iteration's.
func (s *Store) Outputs(ctx context.Context, q Querier, runID string, ids []string) (map[string]any, error) {
	if q == nil {
		q = s.pool
	}
	// All outputs: each node's latest row. Named ones: per id, its own
	// row (a node outside loops, or a loop's exit step) else its latest
	// iteration's, each one index probe whatever the number of iterations.
	sql := `SELECT DISTINCT ON (coalesce(node, node_id)) coalesce(node, node_id), output FROM ` + s.tables.Steps + `
		WHERE run_id = $1 AND state IN ('succeeded', 'recovered')
		ORDER BY coalesce(node, node_id), iteration DESC NULLS FIRST`
	args := []any{runID}
	if ids != nil {
		if len(ids) == 0 {
			return map[string]any{}, nil
		}
		sql = `SELECT k.id, x.output FROM unnest($2::text[]) AS k(id) CROSS JOIN LATERAL (
				(SELECT output FROM ` + s.tables.Steps + ` WHERE run_id = $1 AND node_id = k.id AND state IN ('succeeded', 'recovered'))
				UNION ALL
				(SELECT output FROM ` + s.tables.Steps + ` WHERE run_id = $1 AND node = k.id AND state IN ('succeeded', 'recovered') ORDER BY iteration DESC LIMIT 1)
				LIMIT 1) x`
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
