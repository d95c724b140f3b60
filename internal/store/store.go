package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stepflow/stepflow/schema"
	"github.com/stepflow/stepflow/workflow"
)

// ErrRunNotFound is returned for a run id with no status row.
var ErrRunNotFound = errors.New("run not found")

// ErrBlueprintNotFound is returned for a digest with no snapshot.
var ErrBlueprintNotFound = errors.New("blueprint snapshot not found")

// ErrRunExists is returned when creating a run whose id is taken.
var ErrRunExists = errors.New("run already exists")

// Store reads and writes stepflow's tables. Other packages go through its
// methods, never its SQL, so that the tables' shape is this package's
// business alone.
type Store struct {
	pool   *pgxpool.Pool
	tables schema.QuotedTables
	dyn    *dynCache
}

// New returns a Store over pool for the given (validated) table names.
func New(pool *pgxpool.Pool, tables schema.Tables) (*Store, error) {
	if err := tables.Validate(); err != nil {
		return nil, err
	}
	return &Store{pool: pool, tables: tables.Quoted(), dyn: &dynCache{}}, nil
}

// Ping checks that PostgreSQL answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Close closes the store's pool.
func (s *Store) Close() { s.pool.Close() }

// Connect opens a pool of at most maxConns connections (pgxpool's default
// when 0) on url. It dials nothing: the pool connects on first use, so an
// unreachable PostgreSQL shows at the first query; callers that must know
// at start-up call Ping.
func Connect(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("POSTGRES_URL: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// Step is a stored step row: one step of a run, named by its step key
// (see workflow.Step).
type Step struct {
	// NodeID is the step key: the node id outside loops, "<node>#<n>"
	// for an iteration of a loop's node, a dynamic node's id.
	NodeID string
	// Node and Iteration name the node and iteration of a loop
	// iteration's step ("" and 0 otherwise).
	Node      string
	Iteration int
	// Dynamic and Gather are the dynamic nodes the step's result created
	// and the node that gathers their outputs (workflow.Routing).
	Dynamic []workflow.DynamicNode
	Gather  string
	// Definition is a dynamic node's, as its creator's routing stored it.
	Definition *workflow.DynamicNode
	State      workflow.StepState
	Attempts   int
	Input      any
	Output     any
	Action     string
	Taken      []string
	Error      string
	WakeAt     *time.Time
	StartedAt  *time.Time
	FinishedAt *time.Time
	CreatedAt  time.Time
}

// Run is a stored run (status row).
type Run struct {
	RunID       string
	Status      workflow.RunStatus
	BlueprintID string
	Digest      string
	Pending     int
	Error       string
	StatusData  map[string]any
	CreatedAt   time.Time
	UpdatedAt   time.Time
	FinishedAt  *time.Time
}

// createRunSQL creates run $1 of blueprint $2 (snapshot $3 of version
// $5, body $6) with context $4 and its start steps $8 ($7 of them) ready
// with input $11, the child of step $10 of run $9 when those are set,
// and answers whether it did. The snapshot is immutable under its digest;
// the context and the start steps are written only with a new status row,
// so an id that is taken changes nothing.
func (s *Store) createRunSQL() string {
	return `WITH
		snapshot AS (
			INSERT INTO ` + s.tables.Blueprints + ` (digest, blueprint_id, version, body) VALUES ($3, $2, $5, $6) ON CONFLICT (digest) DO NOTHING),
		run AS (
			INSERT INTO ` + s.tables.Statuses + ` (run_id, status, blueprint_id, blueprint_digest, pending, parent_run_id, parent_step)
			VALUES ($1, 'running', $2, $3, $7, $9, $10)
			ON CONFLICT (run_id) DO NOTHING RETURNING run_id),
		context AS (
			INSERT INTO ` + s.tables.Contexts + ` (run_id, context_data) SELECT run_id, $4 FROM run
			ON CONFLICT (run_id) DO UPDATE SET context_data = EXCLUDED.context_data),
		steps AS (
			INSERT INTO ` + s.tables.Steps + ` (run_id, node_id, state, input) SELECT run_id, n, 'ready', $11 FROM run, unnest($8::text[]) AS n
			ON CONFLICT DO NOTHING)
		SELECT EXISTS (SELECT 1 FROM run)`
}

func jsonArg(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return b, nil
}

func decodeJSON(b []byte) any {
	if b == nil {
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil
	}
	return v
}

// SaveBlueprint stores an immutable snapshot of bp under its digest.
func (s *Store) SaveBlueprint(ctx context.Context, q Querier, bp *workflow.Blueprint, digest string) error {
	body, err := json.Marshal(bp)
	if err != nil {
		return fmt.Errorf("encode blueprint %s: %w", bp.ID, err)
	}
	_, err = q.Exec(ctx, `INSERT INTO `+s.tables.Blueprints+` (digest, blueprint_id, version, body) VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING`,
		digest, bp.ID, bp.Version(), body)
	if err != nil {
		return fmt.Errorf("save blueprint %s: %w", bp.ID, err)
	}
	return nil
}

// LoadBlueprint reads the snapshot with the given digest.
func (s *Store) LoadBlueprint(ctx context.Context, digest string) (*workflow.Blueprint, error) {
	var body []byte
	err := s.pool.QueryRow(ctx, `SELECT body FROM `+s.tables.Blueprints+` WHERE digest = $1`, digest).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrBlueprintNotFound, digest)
	}
	if err != nil {
		return nil, fmt.Errorf("load blueprint %s: %w", digest, err)
	}
	bp, err := workflow.Decode(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBlueprintNotFound, digest, err)
	}
	return bp, nil
}

// Querier is what both a pool and a transaction offer.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CreateRun records a new run of w: its blueprint snapshot, its context
// (the initial input), its status (running) and a ready step for each start
// node, in one statement (one round trip, its own transaction). It returns
// the start nodes.
func (s *Store) CreateRun(ctx context.Context, runID string, w *workflow.Workflow, input map[string]any) ([]string, error) {
	if input == nil {
		input = map[string]any{}
	}
	in, err := jsonArg(input)
	if err != nil {
		return nil, fmt.Errorf("encode input: %w", err)
	}
	body, err := json.Marshal(w.Blueprint)
	if err != nil {
		return nil, fmt.Errorf("encode blueprint %s: %w", w.Blueprint.ID, err)
	}
	starts := w.StartNodes()
	var created bool
	err = s.pool.QueryRow(ctx, s.createRunSQL(),
		runID, w.Blueprint.ID, w.Digest, in, w.Blueprint.Version(), body, len(starts), starts, nil, nil, in).Scan(&created)
	if err != nil {
		return nil, fmt.Errorf("create run %s: %w", runID, err)
	}
	if !created {
		return nil, fmt.Errorf("create run %s: run %s: %w", runID, runID, ErrRunExists)
	}
	return starts, nil
}

// PinBlueprint pins w to a run started without one (the Flowcraft way: a
// context row and a running status row only) and creates the ready steps
// of its start nodes, whose input is the run's initial context. It is a
// no-op for a run already pinned.
func (s *Store) PinBlueprint(ctx context.Context, runID string, w *workflow.Workflow) error {
	starts := w.StartNodes()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.SaveBlueprint(ctx, tx, w.Blueprint, w.Digest); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE `+s.tables.Statuses+` SET blueprint_id = $2, blueprint_digest = $3, pending = $4, updated_at = now() WHERE run_id = $1 AND blueprint_digest IS NULL`,
			runID, w.Blueprint.ID, w.Digest, len(starts))
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		var initial []byte
		err = tx.QueryRow(ctx, `SELECT context_data - 'blueprintId' - 'blueprintVersion' FROM `+s.tables.Contexts+` WHERE run_id = $1`, runID).Scan(&initial)
		if errors.Is(err, pgx.ErrNoRows) {
			initial = []byte(`{}`)
			if _, err := tx.Exec(ctx, `INSERT INTO `+s.tables.Contexts+` (run_id, context_data) VALUES ($1, '{}') ON CONFLICT DO NOTHING`, runID); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		inputs := make([][]byte, len(starts))
		for i := range starts {
			inputs[i] = initial
		}
		_, err = tx.Exec(ctx, s.readySQL(),
			runID, starts, inputs)
		return err
	})
}

// Cancel marks a running (or awaiting) run cancelled; no further step of
// it starts, and it cannot be resumed. Its child runs (subflows), and
// theirs, are cancelled in the same statement.
func (s *Store) Cancel(ctx context.Context, runID string) (workflow.RunStatus, error) {
	var st string
	err := s.pool.QueryRow(ctx, `WITH RECURSIVE u AS (UPDATE `+s.tables.Statuses+` SET status = 'cancelled', error = 'cancelled', finished_at = now(), updated_at = now() WHERE run_id = $1 AND status IN ('running', 'awaiting') RETURNING run_id, status),
		ended AS (SELECT run_id FROM u), `+s.cancelDescendantsSQL()+` -- subflows: children.go
		SELECT status FROM u UNION ALL SELECT status FROM `+s.tables.Statuses+` WHERE run_id = $1 AND NOT EXISTS (SELECT 1 FROM u)`, runID).Scan(&st)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("run %s: %w", runID, ErrRunNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("cancel run %s: %w", runID, err)
	}
	return workflow.RunStatus(st), nil
}

const runColumns = `run_id, status, coalesce(blueprint_id, ''), coalesce(blueprint_digest, ''), pending, coalesce(error, ''), status_data, created_at, updated_at, finished_at`

func scanRun(row pgx.Row) (*Run, error) {
	var r Run
	var status string
	var data []byte
	if err := row.Scan(&r.RunID, &status, &r.BlueprintID, &r.Digest, &r.Pending, &r.Error, &data, &r.CreatedAt, &r.UpdatedAt, &r.FinishedAt); err != nil {
		return nil, err
	}
	r.Status = workflow.RunStatus(status)
	if m, ok := decodeJSON(data).(map[string]any); ok {
		r.StatusData = m
	}
	return &r, nil
}

// GetRun reads a run's status row.
func (s *Store) GetRun(ctx context.Context, runID string) (*Run, error) {
	r, err := scanRun(s.pool.QueryRow(ctx, `SELECT `+runColumns+` FROM `+s.tables.Statuses+` WHERE run_id = $1`, runID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("run %s: %w", runID, ErrRunNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load run %s: %w", runID, err)
	}
	return r, nil
}

const stepColumns = `node_id, state, attempts, input, output, coalesce(action, ''), coalesce(taken, '{}'), coalesce(error, ''), wake_at, started_at, finished_at, created_at,
	coalesce(node, ''), coalesce(iteration, 0), dynamic, coalesce(gather, ''), definition`

func scanStep(row pgx.Row) (*Step, error) {
	var sc stepScan
	if err := row.Scan(sc.dest()...); err != nil {
		return nil, err
	}
	return sc.step(), nil
}

// stepScan receives the stepColumns of a row.
type stepScan struct {
	st                  Step
	state               string
	input, output       []byte
	dynamic, definition []byte
}

func (sc *stepScan) dest() []any {
	st := &sc.st
	return []any{&st.NodeID, &sc.state, &st.Attempts, &sc.input, &sc.output, &st.Action, &st.Taken, &st.Error, &st.WakeAt, &st.StartedAt, &st.FinishedAt, &st.CreatedAt,
		&st.Node, &st.Iteration, &sc.dynamic, &st.Gather, &sc.definition}
}

func (sc *stepScan) step() *Step {
	st := sc.st
	st.State = workflow.StepState(sc.state)
	st.Input = decodeJSON(sc.input)
	st.Output = decodeJSON(sc.output)
	if sc.dynamic != nil {
		_ = json.Unmarshal(sc.dynamic, &st.Dynamic) // written by Route's checked nodes
	}
	if sc.definition != nil {
		var d workflow.DynamicNode
		if json.Unmarshal(sc.definition, &d) == nil {
			st.Definition = &d
		}
	}
	return &st
}

// Steps reads every step of a run, oldest first.
func (s *Store) Steps(ctx context.Context, runID string) ([]*Step, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+stepColumns+` FROM `+s.tables.Steps+` WHERE run_id = $1 ORDER BY created_at, node_id`, runID)
	if err != nil {
		return nil, fmt.Errorf("load steps of %s: %w", runID, err)
	}
	defer rows.Close()
	var out []*Step
	for rows.Next() {
		st, err := scanStep(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

// Context reads a run's context.
func (s *Store) Context(ctx context.Context, runID string) (map[string]any, error) {
	var b []byte
	err := s.pool.QueryRow(ctx, `SELECT context_data FROM `+s.tables.Contexts+` WHERE run_id = $1`, runID).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return map[string]any{}, nil
	}
	if err != nil {
		return nil, err
	}
	m, _ := decodeJSON(b).(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// Status reads a run's status only.
func (s *Store) Status(ctx context.Context, runID string) (workflow.RunStatus, error) {
	var st string
	err := s.pool.QueryRow(ctx, `SELECT status FROM `+s.tables.Statuses+` WHERE run_id = $1`, runID).Scan(&st)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("run %s: %w", runID, ErrRunNotFound)
	}
	return workflow.RunStatus(st), err
}
