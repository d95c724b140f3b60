package store

// Tests of CommitStep / CommitSteps against a real PostgreSQL (POSTGRES_URL,
// default postgres://postgres@127.0.0.1:5432/test). Each test migrates its
// own tables (t_<8hex>_…, dropped in cleanup), compiles small blueprints and
// drives runs by hand: LoadStep, an Outcome built as the step function
// builds it (function/step.go run: State succeeded, w.Route of the result),
// then a commit.
//
// A commit of one outcome may take the one-statement path (commitAlone) or
// the general two-round-trip path (commitSteps). The pool of each test
// carries a tracer that tells which ran: the one statement is recognised by
// its "counted" CTE, the general path by the BEGIN its first batch opens.
// Committing an outcome together with an unrelated run's outcome (a decoy)
// forces the general path, since groups never use commitAlone.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/schema"
	"github.com/stepflow/stepflow/workflow"
)

// ---- which path a commit took ----

// commitPaths counts the commit statements a pool ran.
type commitPaths struct {
	Alone   int // one-statement commits (commitAlone), whatever their end
	Refused int // of which rolled back on purpose (division by zero, 22012)
	General int // general-path transactions (commitSteps)
}

type pathTracer struct {
	mu sync.Mutex
	n  commitPaths
}

type aloneQueryKey struct{}

// aloneMarker is a fragment of commitAlone's statement that no other
// statement of the store has.
const aloneMarker = "counted AS ("

func (p *pathTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, aloneMarker) {
		return context.WithValue(ctx, aloneQueryKey{}, true)
	}
	return ctx
}

func (p *pathTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	if ctx.Value(aloneQueryKey{}) == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n.Alone++
	var pgErr *pgconn.PgError
	if errors.As(d.Err, &pgErr) && pgErr.Code == "22012" {
		p.n.Refused++
	}
}

func (p *pathTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (p *pathTracer) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if d.SQL == "BEGIN" { // commitSteps opens its transaction in its first batch
		p.mu.Lock()
		p.n.General++
		p.mu.Unlock()
	}
}

func (p *pathTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// take returns the counts since the last take.
func (p *pathTracer) take() commitPaths {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.n
	p.n = commitPaths{}
	return n
}

// ---- fixture ----

type commitFixture struct {
	t      *testing.T
	ctx    context.Context
	pool   *pgxpool.Pool
	s      *Store
	tables schema.Tables
	paths  *pathTracer
	decoyW *workflow.Workflow
	decoys *atomic.Int64
}

// on returns the fixture reporting to t (a subtest).
func (f *commitFixture) on(t *testing.T) *commitFixture {
	g := *f
	g.t = t
	return &g
}

// newCommitFixture migrates a fresh, uniquely prefixed table set (dropped
// in cleanup) and opens a traced pool of at most maxConns connections.
func newCommitFixture(t *testing.T, maxConns int32) *commitFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	f := &commitFixture{
		t:      t,
		ctx:    ctx,
		paths:  &pathTracer{},
		decoys: new(atomic.Int64),
	}
	f.pool = testenv.Pool(t, maxConns, func(cfg *pgxpool.Config) { cfg.ConnConfig.Tracer = f.paths })
	f.tables = testenv.Tables(t, f.pool)
	var err error
	if f.s, err = New(f.pool, f.tables); err != nil {
		t.Fatal(err)
	}
	f.decoyW = compileBlueprint(t, `{"id":"decoy","nodes":[{"id":"only","uses":"noop"}]}`)
	f.paths.take()
	return f
}

func compileBlueprint(t *testing.T, src string) *workflow.Workflow {
	t.Helper()
	bp, err := workflow.Decode([]byte(src))
	if err != nil {
		t.Fatalf("decode blueprint: %v", err)
	}
	w, err := workflow.Compile(bp, workflow.NewRegistry())
	if err != nil {
		t.Fatalf("compile blueprint: %v", err)
	}
	return w
}

func (f *commitFixture) createRun(runID string, w *workflow.Workflow, input map[string]any) {
	f.t.Helper()
	if _, err := f.s.CreateRun(f.ctx, runID, w, input); err != nil {
		f.t.Fatalf("create run %s: %v", runID, err)
	}
}

// buildOutcome loads the step and builds the outcome of its successful
// next attempt with the given output, as the step function does.
func (f *commitFixture) buildOutcome(w *workflow.Workflow, runID, nodeID string, output any) (Outcome, error) {
	ld, err := f.s.LoadStep(f.ctx, runID, nodeID)
	if err != nil {
		return Outcome{}, err
	}
	if ld.Run == nil || ld.Step == nil {
		return Outcome{}, fmt.Errorf("load %s/%s: run %v, step %v", runID, nodeID, ld.Run, ld.Step)
	}
	res := workflow.NodeResult{Output: output}
	routing, err := w.Route(nodeID, res, workflow.Env{Context: ld.Context})
	if err != nil {
		return Outcome{}, fmt.Errorf("route %s: %w", nodeID, err)
	}
	started := time.Now().UTC().Truncate(time.Microsecond)
	return Outcome{
		RunID: runID, NodeID: nodeID,
		LoadedAttempts: ld.Step.Attempts, Attempts: ld.Step.Attempts + 1,
		State: workflow.StepSucceeded, Result: res, Routing: routing,
		StartedAt: started, FinishedAt: started.Add(3 * time.Millisecond),
	}, nil
}

func (f *commitFixture) outcome(w *workflow.Workflow, runID, nodeID string, output any) Outcome {
	f.t.Helper()
	o, err := f.buildOutcome(w, runID, nodeID, output)
	if err != nil {
		f.t.Fatal(err)
	}
	return o
}

// commit commits o by itself (CommitStep: the one-statement path when it
// applies, else the general path).
func (f *commitFixture) commit(w *workflow.Workflow, o Outcome) *Committed {
	f.t.Helper()
	res, err := f.s.CommitStep(f.ctx, w, o)
	if err != nil {
		f.t.Fatalf("commit %s/%s: %v", o.RunID, o.NodeID, err)
	}
	if res == nil {
		f.t.Fatalf("commit %s/%s: no result", o.RunID, o.NodeID)
	}
	return res
}

// decoy creates a run of the one-node decoy blueprint and returns the
// commit of its only step.
func (f *commitFixture) decoy() (*Commit, error) {
	id := fmt.Sprintf("decoy-%03d", f.decoys.Add(1))
	if _, err := f.s.CreateRun(f.ctx, id, f.decoyW, nil); err != nil {
		return nil, err
	}
	o, err := f.buildOutcome(f.decoyW, id, "only", "decoy")
	if err != nil {
		return nil, err
	}
	return &Commit{W: f.decoyW, O: o}, nil
}

// commitGeneral commits o in a group with a decoy's outcome, which forces
// the general path, and checks the decoy's commit.
func (f *commitFixture) commitGeneral(w *workflow.Workflow, o Outcome) (*Committed, error) {
	d, err := f.decoy()
	if err != nil {
		return nil, err
	}
	c := &Commit{W: w, O: o}
	f.s.CommitSteps(f.ctx, []*Commit{c, d})
	if d.Err != nil || d.Res == nil || !d.Res.Applied || d.Res.RunStatus != workflow.RunCompleted {
		return nil, fmt.Errorf("decoy %s: res %+v, err %v", d.O.RunID, d.Res, d.Err)
	}
	if c.Err == nil && c.Res == nil {
		return nil, fmt.Errorf("commit %s/%s: neither result nor error", o.RunID, o.NodeID)
	}
	return c.Res, c.Err
}

func (f *commitFixture) mustCommitGeneral(w *workflow.Workflow, o Outcome) *Committed {
	f.t.Helper()
	res, err := f.commitGeneral(w, o)
	if err != nil {
		f.t.Fatalf("commit %s/%s (general path): %v", o.RunID, o.NodeID, err)
	}
	return res
}

// stepRow is a step row as stored, every column.
type stepRow struct {
	State      string
	Attempts   int
	Input      any
	Output     any
	Action     *string
	Taken      []string
	Deliveries any
	Error      *string
	WakeAt     *time.Time
	StartedAt  *time.Time
	FinishedAt *time.Time
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

func (r *stepRow) String() string {
	if r == nil {
		return "<no row>"
	}
	str := func(p *string) any {
		if p == nil {
			return nil
		}
		return *p
	}
	tm := func(p *time.Time) any {
		if p == nil {
			return nil
		}
		return p.Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("{state %s, attempts %d, input %v, output %v, action %v, taken %q, deliveries %v, error %v, wake %v, started %v, finished %v, created %s, updated %s}",
		r.State, r.Attempts, r.Input, r.Output, str(r.Action), r.Taken, r.Deliveries, str(r.Error), tm(r.WakeAt), tm(r.StartedAt), tm(r.FinishedAt),
		r.CreatedAt.Format(time.RFC3339Nano), r.UpdatedAt.Format(time.RFC3339Nano))
}

// row reads a step row; nil when there is none.
func (f *commitFixture) row(runID, nodeID string) *stepRow {
	f.t.Helper()
	var r stepRow
	var in, out, deliveries []byte
	err := f.pool.QueryRow(f.ctx, `SELECT state, attempts, input, output, action, taken, deliveries, error, wake_at, started_at, finished_at, created_at, updated_at
		FROM `+f.s.tables.Steps+` WHERE run_id = $1 AND node_id = $2`, runID, nodeID).
		Scan(&r.State, &r.Attempts, &in, &out, &r.Action, &r.Taken, &deliveries, &r.Error, &r.WakeAt, &r.StartedAt, &r.FinishedAt, &r.CreatedAt, &r.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		f.t.Fatalf("read step %s/%s: %v", runID, nodeID, err)
	}
	r.Input, r.Output, r.Deliveries = decodeJSON(in), decodeJSON(out), decodeJSON(deliveries)
	return &r
}

// essence is the row without its times (which depend on when the attempt
// ran and was committed), keeping whether each optional one is set.
func (r *stepRow) essence() *stepRow {
	if r == nil {
		return nil
	}
	e := *r
	e.CreatedAt, e.UpdatedAt = time.Time{}, time.Time{}
	for _, t := range []**time.Time{&e.WakeAt, &e.StartedAt, &e.FinishedAt} {
		if *t != nil {
			*t = &time.Time{}
		}
	}
	return &e
}

// rows reads every step row of a run, by node id.
func (f *commitFixture) rows(runID string) map[string]*stepRow {
	f.t.Helper()
	ids, err := pgx.CollectRows(mustQuery(f, `SELECT node_id FROM `+f.s.tables.Steps+` WHERE run_id = $1`, runID), pgx.RowTo[string])
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]*stepRow{}
	for _, id := range ids {
		out[id] = f.row(runID, id)
	}
	return out
}

func mustQuery(f *commitFixture, sql string, args ...any) pgx.Rows {
	f.t.Helper()
	rows, err := f.pool.Query(f.ctx, sql, args...)
	if err != nil {
		f.t.Fatal(err)
	}
	return rows
}

func (f *commitFixture) run(runID string) *Run {
	f.t.Helper()
	r, err := f.s.GetRun(f.ctx, runID)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *commitFixture) context(runID string) map[string]any {
	f.t.Helper()
	c, err := f.s.Context(f.ctx, runID)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *commitFixture) dbNow() time.Time {
	f.t.Helper()
	var now time.Time
	if err := f.pool.QueryRow(f.ctx, `SELECT clock_timestamp()`).Scan(&now); err != nil {
		f.t.Fatal(err)
	}
	return now
}

// wantPaths checks which commit statements ran since the last check.
func (f *commitFixture) wantPaths(what string, want commitPaths) {
	f.t.Helper()
	if got := f.paths.take(); got != want {
		f.t.Errorf("%s: commit statements %+v, want %+v", what, got, want)
	}
}

var (
	viaAlone   = commitPaths{Alone: 1}
	viaGeneral = commitPaths{General: 1}
)

// asJSON is v as it reads back from a jsonb column.
func asJSON(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return decodeJSON(b)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func wantResult(t *testing.T, what string, res *Committed, applied bool, status workflow.RunStatus, ready, skipped []string) {
	t.Helper()
	if res.Applied != applied || res.RunStatus != status {
		t.Errorf("%s: Applied %v, RunStatus %q; want %v, %q", what, res.Applied, res.RunStatus, applied, status)
	}
	if got := sorted(res.Ready); !slices.Equal(got, sorted(ready)) {
		t.Errorf("%s: Ready %q, want %q", what, res.Ready, ready)
	}
	if !slices.Equal(res.Skipped, skipped) {
		t.Errorf("%s: Skipped %q, want %q", what, res.Skipped, skipped)
	}
}

func wantRun(t *testing.T, what string, r *Run, status workflow.RunStatus, pending int) {
	t.Helper()
	if r.Status != status || r.Pending != pending {
		t.Errorf("%s: run %s is %q with %d pending, want %q with %d", what, r.RunID, r.Status, r.Pending, status, pending)
	}
	if final := r.FinishedAt != nil; final != status.Final() {
		t.Errorf("%s: run %s finished_at %v, want set: %v", what, r.RunID, r.FinishedAt, status.Final())
	}
}

// wantReadyStep checks a step made ready and not run yet.
func wantReadyStep(t *testing.T, what string, r *stepRow, input any) {
	t.Helper()
	switch {
	case r == nil:
		t.Errorf("%s: no step row, want a ready one", what)
	case r.State != "ready" || r.Attempts != 0 || r.Output != nil || r.Taken != nil || r.FinishedAt != nil || r.StartedAt != nil:
		t.Errorf("%s: step %+v, want ready, never attempted", what, r)
	case !reflect.DeepEqual(r.Input, asJSON(input)):
		t.Errorf("%s: input %#v, want %#v", what, r.Input, asJSON(input))
	}
}

// wantFinishedStep checks the row of a step that o finished.
func wantFinishedStep(t *testing.T, what string, r *stepRow, o Outcome, notBefore time.Time) {
	t.Helper()
	if r == nil {
		t.Errorf("%s: no step row", what)
		return
	}
	if r.State != string(o.State) || r.Attempts != o.Attempts {
		t.Errorf("%s: state %q attempts %d, want %q %d", what, r.State, r.Attempts, o.State, o.Attempts)
	}
	if !reflect.DeepEqual(r.Output, asJSON(o.Result.Output)) {
		t.Errorf("%s: output %#v, want %#v", what, r.Output, asJSON(o.Result.Output))
	}
	if !slices.Equal(r.Taken, nonNil(o.Routing.Taken)) || r.Taken == nil {
		t.Errorf("%s: taken %q, want %q", what, r.Taken, o.Routing.Taken)
	}
	if !reflect.DeepEqual(r.Deliveries, asJSON(o.Routing.Deliveries)) {
		t.Errorf("%s: deliveries %#v, want %#v", what, r.Deliveries, asJSON(o.Routing.Deliveries))
	}
	if r.Error != nil || r.Action != nil || r.WakeAt != nil {
		t.Errorf("%s: error %v, action %v, wake_at %v; want none", what, r.Error, r.Action, r.WakeAt)
	}
	if r.StartedAt == nil || !r.StartedAt.Equal(o.StartedAt) {
		t.Errorf("%s: started_at %v, want %v", what, r.StartedAt, o.StartedAt)
	}
	if r.FinishedAt == nil || !r.FinishedAt.Equal(o.FinishedAt) {
		t.Errorf("%s: finished_at %v, want %v", what, r.FinishedAt, o.FinishedAt)
	}
	if r.UpdatedAt.Before(notBefore) {
		t.Errorf("%s: updated_at %v, before the commit started (%v)", what, r.UpdatedAt, notBefore)
	}
}

// ---- 1. a chain ----

const chainBlueprint = `{"id":"chain",
	"nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop"},{"id":"c","uses":"noop"}],
	"edges":[{"source":"a","target":"b","transform":"input.n + 1"},{"source":"b","target":"c"}]}`

func TestCommitChain(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, chainBlueprint)
	input := map[string]any{"seed": "s"}
	f.createRun("alone", w, input)
	f.createRun("general", w, input)
	f.paths.take()

	type path struct {
		run    string
		commit func(Outcome) *Committed
		via    commitPaths
	}
	paths := []path{
		{"alone", func(o Outcome) *Committed { return f.commit(w, o) }, viaAlone},
		{"general", func(o Outcome) *Committed { return f.mustCommitGeneral(w, o) }, viaGeneral},
	}

	// a → b: b is ready with a's delivery (its output through the
	// transform), a is finished, one step is still pending.
	for _, p := range paths {
		what := p.run + ": commit a"
		if len(f.rows(p.run)) != 1 {
			t.Fatalf("%s: want only the start step before the commit", what)
		}
		before := f.run(p.run)
		o := f.outcome(w, p.run, "a", map[string]any{"n": 1})
		if !slices.Equal(o.Routing.Taken, []string{"b"}) {
			t.Fatalf("routing of a: %+v", o.Routing)
		}
		notBefore := f.dbNow()
		f.paths.take()
		res := p.commit(o)
		f.wantPaths(what, p.via)
		wantResult(t, what, res, true, workflow.RunRunning, []string{"b"}, nil)
		r := f.run(p.run)
		wantRun(t, what, r, workflow.RunRunning, 1)
		if !r.UpdatedAt.After(before.UpdatedAt) {
			t.Errorf("%s: run updated_at %v not moved (was %v)", what, r.UpdatedAt, before.UpdatedAt)
		}
		wantFinishedStep(t, what+": a", f.row(p.run, "a"), o, notBefore)
		wantReadyStep(t, what+": b", f.row(p.run, "b"), 2)
		if c := f.row(p.run, "c"); c != nil {
			t.Errorf("%s: c has a step: %+v", what, c)
		}
	}

	// b → c.
	for _, p := range paths {
		what := p.run + ": commit b"
		o := f.outcome(w, p.run, "b", map[string]any{"m": "three"})
		f.paths.take()
		res := p.commit(o)
		f.wantPaths(what, p.via)
		wantResult(t, what, res, true, workflow.RunRunning, []string{"c"}, nil)
		wantRun(t, what, f.run(p.run), workflow.RunRunning, 1)
		wantReadyStep(t, what+": c", f.row(p.run, "c"), map[string]any{"m": "three"})
	}

	// c, the last node, makes nothing ready: the general path completes
	// the run, with the outputs in status_data and the context.
	for _, p := range paths {
		what := p.run + ": commit c"
		o := f.outcome(w, p.run, "c", "done")
		notBefore := f.dbNow()
		f.paths.take()
		res := p.commit(o)
		f.wantPaths(what, viaGeneral)
		wantResult(t, what, res, true, workflow.RunCompleted, nil, nil)
		r := f.run(p.run)
		wantRun(t, what, r, workflow.RunCompleted, 0)
		if r.Error != "" {
			t.Errorf("%s: run error %q", what, r.Error)
		}
		final := asJSON(map[string]any{
			"seed":       "s",
			"_outputs.a": map[string]any{"n": 1},
			"_outputs.b": map[string]any{"m": "three"},
			"_outputs.c": "done",
			"a":          map[string]any{"n": 1},
			"b":          map[string]any{"m": "three"},
			"c":          "done",
		})
		if !reflect.DeepEqual(any(r.StatusData), final) {
			t.Errorf("%s: status_data %#v, want %#v", what, r.StatusData, final)
		}
		if c := f.context(p.run); !reflect.DeepEqual(any(c), final) {
			t.Errorf("%s: context %#v, want %#v", what, c, final)
		}
		wantFinishedStep(t, what+": c", f.row(p.run, "c"), o, notBefore)
	}

	// Both paths wrote the same rows.
	alone, general := f.rows("alone"), f.rows("general")
	if len(alone) != 3 || len(general) != 3 {
		t.Fatalf("rows: %d and %d, want 3 each", len(alone), len(general))
	}
	for id, r := range alone {
		if a, g := r.essence(), general[id].essence(); !reflect.DeepEqual(a, g) {
			t.Errorf("step %s: one-statement path wrote %+v, general path %+v", id, a, g)
		}
	}
}

// ---- 2. a fork and its join ----

const forkBlueprint = `{"id":"fork",
	"nodes":[{"id":"start","uses":"noop"},{"id":"x","uses":"noop"},{"id":"y","uses":"noop"},{"id":"z","uses":"noop"},{"id":"j","uses":"noop"}],
	"edges":[{"source":"start","target":"x"},{"source":"start","target":"y","transform":"input.n * 10"},{"source":"start","target":"z"},
		{"source":"x","target":"j"},{"source":"y","target":"j"},{"source":"z","target":"j"}]}`

func TestCommitForkAndJoin(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, forkBlueprint)
	f.createRun("alone", w, nil)
	f.createRun("general", w, nil)

	// One commit of start makes all three branches ready, each with its
	// own delivery.
	startOut := map[string]any{"n": 2}
	for _, run := range []string{"alone", "general"} {
		what := run + ": commit start"
		o := f.outcome(w, run, "start", startOut)
		f.paths.take()
		var res *Committed
		if run == "alone" {
			res = f.commit(w, o)
			f.wantPaths(what, viaAlone)
		} else {
			res = f.mustCommitGeneral(w, o)
			f.wantPaths(what, viaGeneral)
		}
		wantResult(t, what, res, true, workflow.RunRunning, []string{"x", "y", "z"}, nil)
		wantRun(t, what, f.run(run), workflow.RunRunning, 3)
		wantReadyStep(t, what+": x", f.row(run, "x"), startOut)
		wantReadyStep(t, what+": y", f.row(run, "y"), 20)
		wantReadyStep(t, what+": z", f.row(run, "z"), startOut)
		if j := f.row(run, "j"); j != nil {
			t.Errorf("%s: the join has a step: %+v", what, j)
		}
	}
	general := f.rows("general")
	for id, r := range f.rows("alone") {
		if a, g := r.essence(), general[id].essence(); !reflect.DeepEqual(a, g) {
			t.Errorf("step %s: one-statement path wrote %+v, general path %+v", id, a, g)
		}
	}

	// The join has other predecessors: its branches take the general
	// path; it is ready once, with the third.
	const run = "alone"
	joinReady := 0
	for i, id := range []string{"x", "y", "z"} {
		what := "commit " + id
		o := f.outcome(w, run, id, strings.ToUpper(id))
		f.paths.take()
		res := f.commit(w, o)
		f.wantPaths(what, viaGeneral)
		var ready []string
		if id == "z" {
			ready = []string{"j"}
		}
		wantResult(t, what, res, true, workflow.RunRunning, ready, nil)
		if slices.Contains(res.Ready, "j") {
			joinReady++
		}
		wantRun(t, what, f.run(run), workflow.RunRunning, []int{2, 1, 1}[i]) // z's commit makes j pending
		if j := f.row(run, "j"); id != "z" && j != nil {
			t.Errorf("%s: the join is %q before its last branch", what, j.State)
		}
	}
	wantReadyStep(t, "join", f.row(run, "j"), map[string]any{"x": "X", "y": "Y", "z": "Z"})

	// z again (a redelivery that ran again): nothing more.
	o := f.outcome(w, run, "z", "Z")
	o.LoadedAttempts, o.Attempts = 0, 1
	res := f.commit(w, o)
	wantResult(t, "commit z again", res, false, workflow.RunRunning, nil, nil)
	joinReady += len(res.Ready)
	if joinReady != 1 {
		t.Errorf("the join was made ready %d times, want once", joinReady)
	}
	wantRun(t, "commit z again", f.run(run), workflow.RunRunning, 1)

	res = f.commit(w, f.outcome(w, run, "j", "J"))
	wantResult(t, "commit j", res, true, workflow.RunCompleted, nil, nil)
	wantRun(t, "commit j", f.run(run), workflow.RunCompleted, 0)
	if n := len(f.rows(run)); n != 5 {
		t.Errorf("%d step rows, want 5", n)
	}
}

// ---- 3. commits that do not apply ----

func TestCommitNotApplied(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 6)
	// The chain with an independent second start node, "side": two
	// steps pending from the start, so that a commit that wrongly touched
	// the pending count would not run into commitAlone's "nothing
	// pending" check and be rolled back by it.
	w := compileBlueprint(t, `{"id":"chain-and-side",
		"nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop"},{"id":"c","uses":"noop"},{"id":"side","uses":"noop"}],
		"edges":[{"source":"a","target":"b","transform":"input.n + 1"},{"source":"b","target":"c"}]}`)
	fork := compileBlueprint(t, forkBlueprint)

	type path struct {
		name   string
		commit func(*commitFixture, *workflow.Workflow, Outcome) (*Committed, error)
	}
	paths := []path{
		{"alone", func(f *commitFixture, w *workflow.Workflow, o Outcome) (*Committed, error) {
			return f.s.CommitStep(f.ctx, w, o)
		}},
		{"general", (*commitFixture).commitGeneral},
	}
	for _, path := range paths {
		t.Run("twice/"+path.name, func(t *testing.T) {
			t.Parallel()
			f := f.on(t)
			commit := func(w *workflow.Workflow, o Outcome) (*Committed, error) { return path.commit(f, w, o) }
			run := "twice-" + path.name
			f.createRun(run, w, nil)
			o := f.outcome(w, run, "a", map[string]any{"n": 1})
			res, err := commit(w, o)
			if err != nil {
				t.Fatal(err)
			}
			wantResult(t, "first", res, true, workflow.RunRunning, []string{"b"}, nil)
			runBefore, rowsBefore := f.run(run), f.rows(run)
			o2 := o
			o2.Result.Output, o2.Attempts = map[string]any{"n": 99}, 7 // a second attempt with the same load
			for i, again := range []Outcome{o, o2} {
				res, err = commit(w, again)
				if err != nil {
					t.Fatal(err)
				}
				what := fmt.Sprintf("again #%d", i+1)
				wantResult(t, what, res, false, workflow.RunRunning, nil, nil)
				if r := f.run(run); !reflect.DeepEqual(r, runBefore) {
					t.Errorf("%s: run changed: %+v, was %+v", what, r, runBefore)
				}
				if rows := f.rows(run); !reflect.DeepEqual(rows, rowsBefore) {
					t.Errorf("%s: steps changed: %+v, were %+v", what, rows, rowsBefore)
				}
			}
		})

		t.Run("twice-join-branch/"+path.name, func(t *testing.T) {
			t.Parallel()
			f := f.on(t)
			commit := func(w *workflow.Workflow, o Outcome) (*Committed, error) { return path.commit(f, w, o) }
			run := "join-" + path.name
			f.createRun(run, fork, nil)
			if res := f.commit(fork, f.outcome(fork, run, "start", map[string]any{"n": 1})); len(res.Ready) != 3 {
				t.Fatalf("start made %q ready", res.Ready)
			}
			o := f.outcome(fork, run, "x", "X")
			if res, err := commit(fork, o); err != nil || !res.Applied {
				t.Fatalf("first commit of x: %+v, %v", res, err)
			}
			runBefore, rowsBefore := f.run(run), f.rows(run)
			res, err := commit(fork, o)
			if err != nil {
				t.Fatal(err)
			}
			wantResult(t, "x again", res, false, workflow.RunRunning, nil, nil)
			if r := f.run(run); !reflect.DeepEqual(r, runBefore) || r.Pending != 2 {
				t.Errorf("run changed: %+v, was %+v", r, runBefore)
			}
			if rows := f.rows(run); !reflect.DeepEqual(rows, rowsBefore) {
				t.Errorf("steps changed: %+v, were %+v", rows, rowsBefore)
			}
		})

		t.Run("stale-attempts/"+path.name, func(t *testing.T) {
			t.Parallel()
			f := f.on(t)
			commit := func(w *workflow.Workflow, o Outcome) (*Committed, error) { return path.commit(f, w, o) }
			run := "stale-" + path.name
			f.createRun(run, w, nil)
			o := f.outcome(w, run, "a", map[string]any{"n": 1})
			rowsBefore := f.rows(run)
			stale := o
			stale.LoadedAttempts, stale.Attempts = 1, 2 // the step is at 0
			res, err := commit(w, stale)
			if err != nil {
				t.Fatal(err)
			}
			wantResult(t, "stale", res, false, workflow.RunRunning, nil, nil)
			wantRun(t, "stale", f.run(run), workflow.RunRunning, 2)
			if rows := f.rows(run); !reflect.DeepEqual(rows, rowsBefore) {
				t.Errorf("steps changed: %+v, were %+v", rows, rowsBefore)
			}

			// A retry moves the step to attempt 1: an outcome loaded at 0
			// is stale now, one loaded at 1 applies.
			retry := o
			wake := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
			retry.State, retry.Result, retry.Routing, retry.Error, retry.WakeAt = workflow.StepRetrying, workflow.NodeResult{}, workflow.Routing{}, "boom", &wake
			res, err = commit(w, retry)
			if err != nil {
				t.Fatal(err)
			}
			wantResult(t, "retrying", res, true, workflow.RunRunning, nil, nil)
			wantRun(t, "retrying", f.run(run), workflow.RunRunning, 2)
			if a := f.row(run, "a"); a.State != "retrying" || a.Attempts != 1 {
				t.Fatalf("a after the retry: %+v", a)
			}
			res, err = commit(w, o) // loaded at 0
			if err != nil {
				t.Fatal(err)
			}
			wantResult(t, "attempt 1 after the retry", res, false, workflow.RunRunning, nil, nil)
			if a := f.row(run, "a"); a.State != "retrying" || a.Attempts != 1 || f.row(run, "b") != nil {
				t.Errorf("after a stale commit: a %+v, b %+v", a, f.row(run, "b"))
			}
			o2 := f.outcome(w, run, "a", map[string]any{"n": 5})
			if o2.LoadedAttempts != 1 || o2.Attempts != 2 {
				t.Fatalf("outcome of attempt 2: %+v", o2)
			}
			res, err = commit(w, o2)
			if err != nil {
				t.Fatal(err)
			}
			wantResult(t, "attempt 2", res, true, workflow.RunRunning, []string{"b"}, nil)
			wantRun(t, "attempt 2", f.run(run), workflow.RunRunning, 2)
			a := f.row(run, "a")
			if a.State != "succeeded" || a.Attempts != 2 || a.Error != nil || a.WakeAt != nil || !a.StartedAt.Equal(o.StartedAt) {
				// started_at is the first attempt's: coalesce keeps it.
				t.Errorf("a after attempt 2: %+v", a)
			}
			wantReadyStep(t, "b", f.row(run, "b"), 6)
		})

		t.Run("cancelled/"+path.name, func(t *testing.T) {
			t.Parallel()
			f := f.on(t)
			commit := func(w *workflow.Workflow, o Outcome) (*Committed, error) { return path.commit(f, w, o) }
			run := "cancelled-" + path.name
			f.createRun(run, w, nil)
			o := f.outcome(w, run, "a", map[string]any{"n": 1})
			o.ContextSet = map[string]any{"k": "v"}
			if st, err := f.s.Cancel(f.ctx, run); err != nil || st != workflow.RunCancelled {
				t.Fatalf("cancel: %q, %v", st, err)
			}
			runBefore, rowsBefore := f.run(run), f.rows(run)
			res, err := commit(w, o)
			if err != nil {
				t.Fatal(err)
			}
			wantResult(t, "commit", res, false, workflow.RunCancelled, nil, nil)
			if r := f.run(run); !reflect.DeepEqual(r, runBefore) {
				t.Errorf("run changed: %+v, was %+v", r, runBefore)
			}
			wantRun(t, "commit", f.run(run), workflow.RunCancelled, 2)
			if rows := f.rows(run); !reflect.DeepEqual(rows, rowsBefore) || rows["a"].State != "ready" || len(rows) != 2 {
				t.Errorf("steps changed: %+v, were %+v", rows, rowsBefore)
			}
			if c := f.context(run); len(c) != 0 {
				t.Errorf("context %v, want it untouched (empty)", c)
			}
		})

		t.Run("missing-run/"+path.name, func(t *testing.T) {
			t.Parallel()
			f := f.on(t)
			commit := func(w *workflow.Workflow, o Outcome) (*Committed, error) { return path.commit(f, w, o) }
			for _, node := range []string{"a", "c"} { // a: one statement tried; c: general path
				o := Outcome{RunID: "nope-" + path.name, NodeID: node, State: workflow.StepSucceeded, Attempts: 1,
					Result: workflow.NodeResult{Output: 1}, StartedAt: time.Now(), FinishedAt: time.Now()}
				if node == "a" {
					o.Routing = workflow.Routing{Taken: []string{"b"}, Deliveries: map[string]any{"b": 2}}
				}
				res, err := commit(w, o)
				if !errors.Is(err, ErrRunNotFound) || res != nil {
					t.Errorf("commit %s of a missing run: %+v, %v; want an error wrapping ErrRunNotFound", node, res, err)
				}
			}
			var n int
			if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM `+f.s.tables.Steps+` WHERE run_id = $1`, "nope-"+path.name).Scan(&n); err != nil || n != 0 {
				t.Errorf("steps of the missing run: %d, %v", n, err)
			}
		})
	}
}

// ---- 4. context changes ----

func TestCommitContextChanges(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, chainBlueprint)
	input := map[string]any{"keep": 1, "old": true}
	changed := asJSON(map[string]any{"keep": 1, "k": "v", "nested": map[string]any{"x": []any{1, "two"}}})

	for _, run := range []string{"alone", "general"} {
		f.createRun(run, w, input)
		o := f.outcome(w, run, "a", map[string]any{"n": 1})
		o.ContextSet = map[string]any{"k": "v", "nested": map[string]any{"x": []any{1, "two"}}}
		o.ContextDeleted = []string{"old", "absent"}
		f.paths.take()
		if run == "alone" {
			wantResult(t, run, f.commit(w, o), true, workflow.RunRunning, []string{"b"}, nil)
			f.wantPaths(run, viaAlone)
		} else {
			wantResult(t, run, f.mustCommitGeneral(w, o), true, workflow.RunRunning, []string{"b"}, nil)
			f.wantPaths(run, viaGeneral)
		}
		if c := f.context(run); !reflect.DeepEqual(any(c), changed) {
			t.Errorf("%s: context %#v, want %#v", run, c, changed)
		}
	}

	// A commit that does not apply changes no context: a second commit of
	// a, an outcome with a stale attempt count, a cancelled run.
	const run = "alone"
	o := f.outcome(w, run, "b", "B")
	again := Outcome{RunID: run, NodeID: "a", State: workflow.StepSucceeded, Attempts: 1,
		Routing: workflow.Routing{Taken: []string{"b"}, Deliveries: map[string]any{"b": 2}}}
	stale := o
	stale.LoadedAttempts, stale.Attempts = 3, 4
	for _, c := range []struct {
		what string
		o    Outcome
	}{{"a again", again}, {"stale b", stale}} {
		c.o.ContextSet, c.o.ContextDeleted = map[string]any{"k": "overwritten", "new": 1}, []string{"keep"}
		res := f.commit(w, c.o)
		wantResult(t, c.what, res, false, workflow.RunRunning, nil, nil)
		if got := f.context(run); !reflect.DeepEqual(any(got), changed) {
			t.Errorf("%s: context %#v, want it unchanged %#v", c.what, got, changed)
		}
	}
	if _, err := f.s.Cancel(f.ctx, run); err != nil {
		t.Fatal(err)
	}
	o.ContextSet, o.ContextDeleted = map[string]any{"k": "overwritten"}, []string{"keep"}
	wantResult(t, "cancelled", f.commit(w, o), false, workflow.RunCancelled, nil, nil)
	if got := f.context(run); !reflect.DeepEqual(any(got), changed) {
		t.Errorf("cancelled: context %#v, want it unchanged %#v", got, changed)
	}
}

// ---- 5. an untaken conditional edge ----

const branchBlueprint = `{"id":"branch",
	"nodes":[{"id":"a","uses":"noop"},{"id":"yes","uses":"noop"},{"id":"no","uses":"noop"},{"id":"end","uses":"noop"}],
	"edges":[{"source":"a","target":"yes","condition":"result.output.ok == true"},
		{"source":"a","target":"no","condition":"result.output.ok != true"},
		{"source":"yes","target":"end"}]}`

func TestCommitSkipsUntakenBranch(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, branchBlueprint)

	// "no" has a as its only predecessor and no successors: the one
	// statement skips it while it makes "yes" ready.
	for _, run := range []string{"alone", "general"} {
		f.createRun(run, w, nil)
		o := f.outcome(w, run, "a", map[string]any{"ok": true})
		if !slices.Equal(o.Routing.Taken, []string{"yes"}) {
			t.Fatalf("routing: %+v", o.Routing)
		}
		notBefore := f.dbNow()
		f.paths.take()
		var res *Committed
		if run == "alone" {
			res = f.commit(w, o)
			f.wantPaths(run, viaAlone)
		} else {
			res = f.mustCommitGeneral(w, o)
			f.wantPaths(run, viaGeneral)
		}
		wantResult(t, run, res, true, workflow.RunRunning, []string{"yes"}, []string{"no"})
		wantRun(t, run, f.run(run), workflow.RunRunning, 1)
		wantReadyStep(t, run+": yes", f.row(run, "yes"), map[string]any{"ok": true})
		no := f.row(run, "no")
		if no == nil || no.State != "skipped" || no.Attempts != 0 || no.Input != nil || no.Output != nil || no.FinishedAt == nil || no.FinishedAt.Before(notBefore) {
			t.Errorf("%s: no is %+v, want skipped and finished by the commit", run, no)
		}
		if end := f.row(run, "end"); end != nil {
			t.Errorf("%s: end has a step: %+v", run, end)
		}
	}
	alone, general := f.rows("alone"), f.rows("general")
	for _, id := range []string{"yes", "no"} {
		if a, g := alone[id].essence(), general[id].essence(); !reflect.DeepEqual(a, g) {
			t.Errorf("step %s: one-statement path wrote %+v, general path %+v", id, a, g)
		}
	}

	// The run goes on and completes; the skipped node has no output.
	f.commit(w, f.outcome(w, "alone", "yes", "Y"))
	res := f.commit(w, f.outcome(w, "alone", "end", "E"))
	wantResult(t, "end", res, true, workflow.RunCompleted, nil, nil)
	final := asJSON(map[string]any{"_outputs.a": map[string]any{"ok": true}, "_outputs.yes": "Y", "_outputs.end": "E", "a": map[string]any{"ok": true}, "yes": "Y", "end": "E"})
	if r := f.run("alone"); !reflect.DeepEqual(any(r.StatusData), final) || r.Pending != 0 {
		t.Errorf("final run: %+v, want status_data %#v", r, final)
	}

	// A commit that does not apply skips nothing either: a stale attempt,
	// a cancelled run.
	f.createRun("not-applied", w, nil)
	o := f.outcome(w, "not-applied", "a", map[string]any{"ok": true})
	stale := o
	stale.LoadedAttempts, stale.Attempts = 2, 3
	wantResult(t, "stale", f.commit(w, stale), false, workflow.RunRunning, nil, nil)
	if _, err := f.s.Cancel(f.ctx, "not-applied"); err != nil {
		t.Fatal(err)
	}
	wantResult(t, "cancelled", f.commit(w, o), false, workflow.RunCancelled, nil, nil)
	if rows := f.rows("not-applied"); len(rows) != 1 || rows["a"].State != "ready" {
		t.Errorf("not applied: steps %v, want a still ready, alone", rows)
	}

	// The other way round, the skip propagates past "yes" to "end", whose
	// predecessor is not a: the general path decides.
	f.createRun("other-way", w, nil)
	o = f.outcome(w, "other-way", "a", map[string]any{"ok": false})
	f.paths.take()
	res = f.commit(w, o)
	f.wantPaths("other way", viaGeneral)
	wantResult(t, "other way", res, true, workflow.RunRunning, []string{"no"}, []string{"yes", "end"})
	wantRun(t, "other way", f.run("other-way"), workflow.RunRunning, 1)
	for _, id := range []string{"yes", "end"} {
		if r := f.row("other-way", id); r == nil || r.State != "skipped" {
			t.Errorf("other way: %s is %+v, want skipped", id, r)
		}
	}
	wantReadyStep(t, "other way: no", f.row("other-way", "no"), map[string]any{"ok": false})

	// A node with a fallback: its success skips the fallback, a node the
	// one statement does not decide about; the general path does.
	fb := compileBlueprint(t, `{"id":"fallback",
		"nodes":[{"id":"a","uses":"noop","config":{"fallback":"fb"}},{"id":"fb","uses":"noop"},{"id":"b","uses":"noop"}],
		"edges":[{"source":"a","target":"b"}]}`)
	f.createRun("fallback", fb, nil)
	o = f.outcome(fb, "fallback", "a", "A")
	f.paths.take()
	res = f.commit(fb, o)
	f.wantPaths("fallback", viaGeneral)
	wantResult(t, "fallback", res, true, workflow.RunRunning, []string{"b"}, []string{"fb"})
	wantRun(t, "fallback", f.run("fallback"), workflow.RunRunning, 1)
	if r := f.row("fallback", "fb"); r == nil || r.State != "skipped" {
		t.Errorf("fallback: fb is %v, want skipped", r)
	}
	wantReadyStep(t, "fallback: b", f.row("fallback", "b"), "A")
}

// ---- 6. the one statement rolls back on purpose ----

func TestCommitAloneFallsBackWhenNothingPending(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, `{"id":"pair","nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop"}],
		"edges":[{"source":"a","target":"b","transform":"input.n + 1"}]}`)

	// b's row exists already (finished): the statement's insert of b
	// conflicts, nothing is pending after a, the statement refuses and
	// rolls back, and the general path completes the run.
	input := map[string]any{"old": true, "keep": "k"}
	preB := func(run string) {
		t.Helper()
		if _, err := f.pool.Exec(f.ctx, `INSERT INTO `+f.s.tables.Steps+` (run_id, node_id, state, attempts, output, taken, finished_at) VALUES ($1, 'b', 'succeeded', 1, '"pre"', '{}', now())`, run); err != nil {
			t.Fatal(err)
		}
	}
	for _, run := range []string{"alone", "general"} {
		f.createRun(run, w, input)
		preB(run)
		bBefore := f.row(run, "b")
		o := f.outcome(w, run, "a", map[string]any{"n": 1})
		o.ContextSet, o.ContextDeleted = map[string]any{"k": "v"}, []string{"old"}
		notBefore := f.dbNow()
		f.paths.take()
		var res *Committed
		if run == "alone" {
			res = f.commit(w, o)
			f.wantPaths(run, commitPaths{Alone: 1, Refused: 1, General: 1})
		} else {
			res = f.mustCommitGeneral(w, o)
			f.wantPaths(run, viaGeneral)
		}
		wantResult(t, run, res, true, workflow.RunCompleted, nil, nil)
		r := f.run(run)
		wantRun(t, run, r, workflow.RunCompleted, 0)
		final := asJSON(map[string]any{"keep": "k", "k": "v", "_outputs.a": map[string]any{"n": 1}, "_outputs.b": "pre", "a": map[string]any{"n": 1}, "b": "pre"})
		if !reflect.DeepEqual(any(r.StatusData), final) {
			t.Errorf("%s: status_data %#v, want %#v", run, r.StatusData, final)
		}
		if c := f.context(run); !reflect.DeepEqual(any(c), final) {
			t.Errorf("%s: context %#v, want %#v", run, c, final)
		}
		// a written once, completely, by the general path; b untouched.
		wantFinishedStep(t, run+": a", f.row(run, "a"), o, notBefore)
		if b := f.row(run, "b"); !reflect.DeepEqual(b, bBefore) {
			t.Errorf("%s: b changed: %+v, was %+v", run, b, bBefore)
		}
		if n := len(f.rows(run)); n != 2 {
			t.Errorf("%s: %d step rows, want 2", run, n)
		}
		// Nothing applies a second time.
		res = f.commit(w, o)
		wantResult(t, run+": again", res, false, workflow.RunCompleted, nil, nil)
	}
	if a, g := f.row("alone", "a").essence(), f.row("general", "a").essence(); !reflect.DeepEqual(a, g) {
		t.Errorf("a: with the fallback wrote %+v, general path %+v", a, g)
	}

	// The same conflict with another step still pending: the statement
	// applies (pending 2 → 1), makes nothing ready and the run goes on.
	two := compileBlueprint(t, `{"id":"two","nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop"},{"id":"s","uses":"noop"}],
		"edges":[{"source":"a","target":"b"}]}`)
	f.createRun("two", two, nil)
	preB("two")
	wantRun(t, "two", f.run("two"), workflow.RunRunning, 2)
	o := f.outcome(two, "two", "a", 1)
	f.paths.take()
	res := f.commit(two, o)
	f.wantPaths("two", viaAlone)
	wantResult(t, "two", res, true, workflow.RunRunning, nil, nil)
	wantRun(t, "two", f.run("two"), workflow.RunRunning, 1)
	wantFinishedStep(t, "two: a", f.row("two", "a"), o, time.Time{})
	res = f.commit(two, f.outcome(two, "two", "s", 2))
	wantResult(t, "two: s", res, true, workflow.RunCompleted, nil, nil)
	wantRun(t, "two: s", f.run("two"), workflow.RunCompleted, 0)
}

// ---- 7. concurrency ----

func TestCommitConcurrent(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 8)
	fork := compileBlueprint(t, forkBlueprint)

	// The shared fan-out: start → b_i → {c_i, d_i} → j. Each b_i's commit
	// is one statement (c_i and d_i are its alone) adding one pending
	// step to the shared run; each c_i, d_i is a branch of the join.
	const n = 20
	var nodes, edges []string
	nodes = append(nodes, `{"id":"start","uses":"noop"}`, `{"id":"j","uses":"noop"}`)
	for i := range n {
		b, c, d := fmt.Sprintf("b%02d", i), fmt.Sprintf("c%02d", i), fmt.Sprintf("d%02d", i)
		for _, id := range []string{b, c, d} {
			nodes = append(nodes, fmt.Sprintf(`{"id":%q,"uses":"noop"}`, id))
		}
		edges = append(edges, fmt.Sprintf(`{"source":"start","target":%q}`, b),
			fmt.Sprintf(`{"source":%q,"target":%q}`, b, c), fmt.Sprintf(`{"source":%q,"target":%q}`, b, d),
			fmt.Sprintf(`{"source":%q,"target":"j"}`, c), fmt.Sprintf(`{"source":%q,"target":"j"}`, d))
	}
	fan := compileBlueprint(t, `{"id":"fan","nodes":[`+strings.Join(nodes, ",")+`],"edges":[`+strings.Join(edges, ",")+`]}`)

	forkRun := func(i int) string { return fmt.Sprintf("f-%02d", i) }
	for i := range n {
		f.createRun(forkRun(i), fork, map[string]any{"n": i})
	}
	f.createRun("fan", fan, nil)
	if res := f.commit(fan, f.outcome(fan, "fan", "start", "go")); len(res.Ready) != n {
		t.Fatalf("fan start made %d ready, want %d", len(res.Ready), n)
	}
	wantRun(t, "fan start", f.run("fan"), workflow.RunRunning, n)

	var mu sync.Mutex
	readied := map[StepKey]int{}
	record := func(c *Commit) bool {
		if c.Err != nil || c.Res == nil || !c.Res.Applied {
			t.Errorf("commit %s/%s: %+v, %v", c.O.RunID, c.O.NodeID, c.Res, c.Err)
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		for _, id := range c.Res.Ready {
			readied[StepKey{c.O.RunID, id}]++
		}
		return true
	}
	prepared := func(w *workflow.Workflow, run, node string, out any) *Commit {
		o, err := f.buildOutcome(w, run, node, out)
		if err != nil {
			t.Error(err)
			return nil
		}
		return &Commit{W: w, O: o}
	}
	commitOne := func(w *workflow.Workflow, run, node string, out any) bool {
		c := prepared(w, run, node, out)
		if c == nil {
			return false
		}
		c.Res, c.Err = f.s.CommitStep(f.ctx, w, c.O)
		return record(c)
	}

	f.paths.take()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			run := forkRun(i)
			b, c, d := fmt.Sprintf("b%02d", i), fmt.Sprintf("c%02d", i), fmt.Sprintf("d%02d", i)
			if !commitOne(fork, run, "start", map[string]any{"n": i}) || !commitOne(fan, "fan", b, b) {
				return
			}
			var inner sync.WaitGroup
			if i%2 == 0 {
				// x with the fan's c_i in one group: two runs locked in
				// one transaction.
				inner.Go(func() {
					cx, cc := prepared(fork, run, "x", "x"), prepared(fan, "fan", c, c)
					if cx == nil || cc == nil {
						return
					}
					f.s.CommitSteps(f.ctx, []*Commit{cx, cc})
					record(cx)
					record(cc)
				})
			} else {
				inner.Go(func() { commitOne(fork, run, "x", "x") })
				inner.Go(func() { commitOne(fan, "fan", c, c) })
			}
			inner.Go(func() { commitOne(fork, run, "y", "y") })
			inner.Go(func() { commitOne(fork, run, "z", "z") })
			inner.Go(func() { commitOne(fan, "fan", d, d) })
			inner.Wait()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// One statement for each start and each b_i; one transaction for each
	// other commit or group (more would mean groups were retried one by
	// one after the database refused them, a deadlock say).
	f.wantPaths("concurrent commits", commitPaths{Alone: 2 * n, General: n/2*4 + n/2*5})

	// Every node was made ready exactly once; each join is ready with
	// every branch's delivery; one step is pending in each run.
	fanJoinInput := map[string]any{}
	for i := range n {
		run := forkRun(i)
		for _, id := range []string{"x", "y", "z", "j"} {
			if got := readied[StepKey{run, id}]; got != 1 {
				t.Errorf("%s: %s made ready %d times, want once", run, id, got)
			}
		}
		wantRun(t, run, f.run(run), workflow.RunRunning, 1)
		wantReadyStep(t, run+": j", f.row(run, "j"), map[string]any{"x": "x", "y": "y", "z": "z"})
		if rows := f.rows(run); len(rows) != 5 {
			t.Errorf("%s: %d step rows, want 5", run, len(rows))
		}
		b, c, d := fmt.Sprintf("b%02d", i), fmt.Sprintf("c%02d", i), fmt.Sprintf("d%02d", i)
		fanJoinInput[c], fanJoinInput[d] = c, d
		for _, id := range []string{c, d} {
			if got := readied[StepKey{"fan", id}]; got != 1 {
				t.Errorf("fan: %s made ready %d times, want once", id, got)
			}
		}
		if r := f.row("fan", b); r == nil || r.State != "succeeded" {
			t.Errorf("fan: %s is %+v, want succeeded", b, r)
		}
	}
	if got := readied[StepKey{"fan", "j"}]; got != 1 {
		t.Errorf("fan: the join made ready %d times, want once", got)
	}
	wantRun(t, "fan", f.run("fan"), workflow.RunRunning, 1)
	wantReadyStep(t, "fan: j", f.row("fan", "j"), fanJoinInput)
	if rows := f.rows("fan"); len(rows) != 2+3*n {
		t.Errorf("fan: %d step rows, want %d", len(rows), 2+3*n)
	}

	// The joins, concurrently, complete every run.
	for i := range n + 1 {
		wg.Go(func() {
			run, w := "fan", fan
			if i < n {
				run, w = forkRun(i), fork
			}
			c := prepared(w, run, "j", "end")
			if c == nil {
				return
			}
			c.Res, c.Err = f.s.CommitStep(f.ctx, w, c.O)
			if record(c) && c.Res.RunStatus != workflow.RunCompleted {
				t.Errorf("%s: join committed, run %q", run, c.Res.RunStatus)
			}
		})
	}
	wg.Wait()
	for i := range n + 1 {
		run := "fan"
		if i < n {
			run = forkRun(i)
		}
		wantRun(t, run, f.run(run), workflow.RunCompleted, 0)
	}
}

// ---- a cancel racing a commit ----

// TestCommitRacingCancel cancels a run while a commit of one of its steps
// waits for the run's row: the commit must see the cancellation, apply
// nothing and report the run cancelled.
func TestCommitRacingCancel(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 6)
	w := compileBlueprint(t, `{"id":"chain-and-side",
		"nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop"},{"id":"side","uses":"noop"}],
		"edges":[{"source":"a","target":"b"}]}`)
	for _, path := range []string{"alone", "general"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			f := f.on(t)
			run := "race-" + path
			f.createRun(run, w, nil)
			o := f.outcome(w, run, "a", "A")
			var decoy *Commit
			if path == "general" {
				var err error
				if decoy, err = f.decoy(); err != nil {
					t.Fatal(err)
				}
			}

			// The cancel, as Cancel writes it, in a transaction held open
			// until the commit waits for it.
			tx, err := f.pool.Begin(f.ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(context.Background()) }()
			var pid int
			if err := tx.QueryRow(f.ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(f.ctx, `UPDATE `+f.s.tables.Statuses+` SET status = 'cancelled', error = 'cancelled', finished_at = now(), updated_at = now() WHERE run_id = $1 AND status = 'running'`, run); err != nil {
				t.Fatal(err)
			}
			runCancelled, err := scanRun(tx.QueryRow(f.ctx, `SELECT `+runColumns+` FROM `+f.s.tables.Statuses+` WHERE run_id = $1`, run))
			if err != nil {
				t.Fatal(err)
			}
			rowsBefore := f.rows(run)
			c := &Commit{W: w, O: o}
			done := make(chan struct{})
			go func() {
				defer close(done)
				cs := []*Commit{c}
				if decoy != nil {
					cs = append(cs, decoy)
				}
				f.s.CommitSteps(f.ctx, cs)
			}()
			// Wait until a backend is blocked by the cancelling one.
			for blocked := false; !blocked; {
				if err := f.pool.QueryRow(f.ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid)))`, pid).Scan(&blocked); err != nil {
					t.Fatalf("waiting for the commit to block: %v", err)
				}
			}
			if err := tx.Commit(f.ctx); err != nil {
				t.Fatal(err)
			}
			<-done

			if c.Err != nil || c.Res == nil {
				t.Fatalf("commit: %+v, %v", c.Res, c.Err)
			}
			if c.Res.Applied || len(c.Res.Ready) != 0 {
				t.Errorf("commit after the cancel: Applied %v, Ready %q; want nothing applied", c.Res.Applied, c.Res.Ready)
			}
			if c.Res.RunStatus != workflow.RunCancelled {
				t.Errorf("commit after the cancel: RunStatus %q, want %q", c.Res.RunStatus, workflow.RunCancelled)
			}
			if r := f.run(run); !reflect.DeepEqual(r, runCancelled) {
				t.Errorf("run changed after the cancel: %+v, was %+v", r, runCancelled)
			}
			if rows := f.rows(run); !reflect.DeepEqual(rows, rowsBefore) || len(rows) != 2 || rows["a"].State != "ready" {
				t.Errorf("steps changed after the cancel: %v, were %v", rows, rowsBefore)
			}
		})
	}
}
