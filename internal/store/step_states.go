package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

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

// txStates serves workflow.Advance from the committing transaction: rows
// are prefetched for the likely questions and read on demand otherwise.
// It implements workflow.DynamicStates and workflow.DynamicCounts: a
// dynamic node's definition comes from its row (or its outcome), and the
// resolved workers of a wave are counted in their creator's row.
type txStates struct {
	s     *Store
	w     *workflow.Workflow
	conn  *pgxpool.Conn // inside the committing transaction
	ctx   context.Context
	runID string
	rows  map[string]*stateRow // nil value: no step
	err   error
	// complete: rows holds every step of the run (a resync read them
	// all), so a key it lacks has no step.
	complete bool
	// defs are the definitions of the dynamic steps being committed.
	defs map[string]workflow.DynamicNode
	// fresh are the steps this transaction finished: their rows are not
	// committed yet, so their dynamic nodes are not cached.
	fresh map[string]bool
	// cached are the dynamic nodes of the rows read without them, as the
	// cache held them when the read was sent.
	cached map[string][]workflow.DynamicNode
	// dynIndex maps a dynamic node to its creator's key, built from the
	// rows read when a dynamic node is asked about that has no row read.
	dynIndex map[string]string
}

func (s *Store) newTxStates(ctx context.Context, conn *pgxpool.Conn, runID string, w *workflow.Workflow) *txStates {
	return &txStates{s: s, w: w, conn: conn, ctx: ctx, runID: runID, rows: map[string]*stateRow{},
		defs: map[string]workflow.DynamicNode{}, fresh: map[string]bool{}, cached: map[string][]workflow.DynamicNode{}}
}

type stateRow struct {
	status     workflow.StepStatus
	deliveries map[string]any
	definition *workflow.DynamicNode
	resolved   []int32 // with dynamic nodes: how many of each wave resolved
}

// queuePrefetch adds to b the read of every row Advance is likely to ask
// about: the steps of the resolved steps' successors and of their
// predecessors (for a step in a loop, at the iterations it may ask
// about), and for a dynamic node its creator and the step that gathers
// it.
func (t *txStates) queuePrefetch(b *pgx.Batch, resolved []string) {
	w := t.w
	want := map[string]bool{}
	for _, key := range resolved {
		want[key] = true
		s, ok := w.Step(key)
		if !ok {
			if d, ok := t.defs[key]; ok {
				want[d.Source] = true
				if d.Gather != "" {
					want[gatherKey(w, d)] = true
				}
			}
			continue
		}
		for _, succ := range w.Successors(s.Node.ID) {
			for _, k := range candidateKeys(w, succ, s.Iteration) {
				want[k] = true
			}
			for _, p := range w.Predecessors(succ) {
				for _, k := range candidateKeys(w, p, s.Iteration) {
					want[k] = true
				}
			}
		}
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	t.queueLoad(b, ids)
}

// candidateKeys are the keys of node's steps that a step at iteration it
// may lead to or wait for: the node id, and in a loop the iterations
// around it and the loop's entries.
func candidateKeys(w *workflow.Workflow, node string, it int) []string {
	if _, ok := w.InLoop(node); !ok {
		return []string{node}
	}
	out := []string{node, w.StepKey(node, 0), w.StepKey(node, 1), w.StepKey(node, it), w.StepKey(node, it+1)}
	if it > 0 {
		out = append(out, w.StepKey(node, it-1))
	}
	return out
}

// gatherKey is the key of the step that gathers dynamic node d: its
// gather node in its creator's iteration.
func gatherKey(w *workflow.Workflow, d workflow.DynamicNode) string {
	if s, ok := w.Step(d.Source); ok && s.InLoop {
		return w.StepKey(d.Gather, s.Iteration)
	}
	return d.Gather
}

// stateColumns are what a txStates row holds. A creator's dynamic nodes
// are read only when not cached (the parameter cached lists the cached
// keys).
func stateColumns(cached string) string {
	return `node_id, state, coalesce(taken, '{}'), deliveries, dynamic IS NOT NULL, CASE WHEN node_id = ANY(` + cached + `::text[]) THEN NULL ELSE dynamic END,
		coalesce(gather, ''), dynamic_resolved, definition`
}

func (t *txStates) queueLoad(b *pgx.Batch, ids []string) {
	cached := t.s.dyn.take(t.runID, ids, t.cached)
	b.Queue(`SELECT `+stateColumns("$3")+` FROM `+t.s.tables.Steps+` WHERE run_id = $1 AND node_id = ANY($2)`, t.runID, ids, cached).Query(func(rows pgx.Rows) error {
		return t.scan(ids, rows)
	})
}

func (t *txStates) load(ids []string) error {
	cached := t.s.dyn.take(t.runID, ids, t.cached)
	rows, err := t.conn.Query(t.ctx, `SELECT `+stateColumns("$3")+` FROM `+t.s.tables.Steps+` WHERE run_id = $1 AND node_id = ANY($2)`, t.runID, ids, cached)
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
		var sc stateScan
		if err := rows.Scan(sc.dest()...); err != nil {
			return err
		}
		r, err := t.row0(&sc)
		if err != nil {
			return err
		}
		t.rows[sc.id] = r
	}
	return rows.Err()
}

// stateScan receives the stateColumns of a row.
type stateScan struct {
	id, state, gather string
	taken             []string
	deliveries        []byte
	hasDynamic        bool
	dynamic           []byte
	resolved          []int32
	definition        []byte
}

func (sc *stateScan) dest() []any {
	return []any{&sc.id, &sc.state, &sc.taken, &sc.deliveries, &sc.hasDynamic, &sc.dynamic, &sc.gather, &sc.resolved, &sc.definition}
}

// row0 turns a scanned row into a stateRow, its dynamic nodes from the
// cache or, read, into it.
func (t *txStates) row0(sc *stateScan) (*stateRow, error) {
	d, _ := decodeJSON(sc.deliveries).(map[string]any)
	r := &stateRow{status: workflow.StepStatus{State: workflow.StepState(sc.state), Taken: sc.taken, Gather: sc.gather}, deliveries: d, resolved: sc.resolved}
	if sc.hasDynamic {
		if sc.dynamic == nil {
			r.status.Dynamic = t.cached[sc.id]
		} else {
			if err := json.Unmarshal(sc.dynamic, &r.status.Dynamic); err != nil {
				return nil, fmt.Errorf("step %s: its dynamic nodes: %w", sc.id, err)
			}
			if !t.fresh[sc.id] {
				t.s.dyn.put(t.runID, sc.id, r.status.Dynamic)
			}
		}
	}
	if sc.definition != nil {
		var def workflow.DynamicNode
		if err := json.Unmarshal(sc.definition, &def); err != nil {
			return nil, fmt.Errorf("step %s: its definition: %w", sc.id, err)
		}
		r.definition = &def
	}
	return r, nil
}

func (t *txStates) row(id string) *stateRow {
	r, known := t.rows[id]
	if !known && !t.complete && t.err == nil {
		if err := t.load(t.siblings(id)); err != nil {
			t.err = err
			return nil
		}
		r = t.rows[id]
	}
	return r
}

// siblings is what to read when id is asked about and was not read: id,
// and when it is a dynamic node whose creator was read, every node of its
// wave (a gather asks about all of them, a wave's end about the next
// wave), in one read.
func (t *txStates) siblings(id string) []string {
	if _, ok := t.w.Step(id); ok {
		return []string{id}
	}
	if t.dynIndex == nil {
		t.dynIndex = map[string]string{}
		for key, r := range t.rows {
			if r != nil {
				for _, d := range r.status.Dynamic {
					t.dynIndex[d.ID] = key
				}
			}
		}
	}
	src, ok := t.dynIndex[id]
	if !ok {
		return []string{id}
	}
	ds := t.rows[src].status.Dynamic
	wave := -1
	for _, d := range ds {
		if d.ID == id {
			wave = d.Wave
		}
	}
	var out []string
	for _, d := range ds {
		if _, read := t.rows[d.ID]; d.Wave == wave && !read {
			out = append(out, d.ID)
		}
	}
	return out
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

// Dynamic finds a dynamic node's definition: the outcome's of a step
// being committed, else its row's.
func (t *txStates) Dynamic(key string) (workflow.DynamicNode, bool) {
	if d, ok := t.defs[key]; ok {
		return d, true
	}
	if r := t.row(key); r != nil && r.definition != nil {
		return *r.definition, true
	}
	return workflow.DynamicNode{}, false
}

// ResolvedInWave reads the count the creator's row keeps.
func (t *txStates) ResolvedInWave(source string, wave int) int {
	r := t.row(source)
	if r == nil || wave < 0 || wave >= len(r.resolved) {
		return 0
	}
	return int(r.resolved[wave])
}

// dynCache keeps the dynamic nodes of committed steps (they never change
// once committed), so that each worker's commit of a large batch does not
// read its creator's list of every worker again.
type dynCache struct {
	mu    sync.Mutex
	m     map[string][]workflow.DynamicNode
	nodes int // in all the lists
}

// dynCacheNodes bounds the cache (some 200 bytes a node); when full it
// starts again.
const dynCacheNodes = 50_000

func dynKey(runID, key string) string { return runID + "\x00" + key }

// take copies into into the cached dynamic nodes of run's steps ids, and
// returns their keys: the rows to read without them.
func (c *dynCache) take(runID string, ids []string, into map[string][]workflow.DynamicNode) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []string{}
	for _, id := range ids {
		if ds, ok := c.m[dynKey(runID, id)]; ok {
			into[id] = ds
			out = append(out, id)
		}
	}
	return out
}

func (c *dynCache) put(runID, key string, ds []workflow.DynamicNode) {
	if len(ds) > dynCacheNodes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.nodes+len(ds) > dynCacheNodes {
		c.m, c.nodes = map[string][]workflow.DynamicNode{}, 0
	}
	if _, ok := c.m[dynKey(runID, key)]; !ok {
		c.nodes += len(ds)
	}
	c.m[dynKey(runID, key)] = ds
}
