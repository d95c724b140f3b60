package schema_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/schema"
)

// Columns of a fresh installation, exactly as migration 001 defines them.
var (
	wantContexts = map[string]column{
		"run_id":       {"text", false, false},
		"context_data": {"jsonb", false, true},
	}
	wantStatuses = map[string]column{
		"run_id":           {"text", false, false},
		"status":           {"text", false, false},
		"status_data":      {"jsonb", true, false},
		"updated_at":       {"timestamptz", false, true},
		"blueprint_id":     {"text", true, false},
		"blueprint_digest": {"text", true, false},
		"pending":          {"int4", false, true},
		"error":            {"text", true, false},
		"created_at":       {"timestamptz", false, true},
		"finished_at":      {"timestamptz", true, false},
		"reconciled_at":    {"timestamptz", true, false},
		"awaiting":         {"int4", false, true}, // 007
		"parent_run_id":    {"text", true, false}, // 009
		"parent_step":      {"text", true, false}, // 009
	}
	wantSteps = map[string]column{
		"run_id":      {"text", false, false},
		"node_id":     {"text", false, false},
		"state":       {"text", false, false},
		"attempts":    {"int4", false, true},
		"input":       {"jsonb", true, false},
		"output":      {"jsonb", true, false},
		"action":      {"text", true, false},
		"taken":       {"_text", true, false},
		"deliveries":  {"jsonb", true, false},
		"error":       {"text", true, false},
		"wake_at":     {"timestamptz", true, false},
		"created_at":  {"timestamptz", false, true},
		"started_at":  {"timestamptz", true, false},
		"finished_at": {"timestamptz", true, false},
		"updated_at":  {"timestamptz", false, true},
		// 007
		"webhook_hash":    {"bytea", true, false},
		"webhook_used_at": {"timestamptz", true, false},
		// 008
		"node":             {"text", true, false},
		"iteration":        {"int4", true, false},
		"dynamic":          {"jsonb", true, false},
		"gather":           {"text", true, false},
		"dynamic_resolved": {"_int4", true, false},
		"definition":       {"jsonb", true, false},
	}
	wantBlueprints = map[string]column{
		"digest":       {"text", false, false},
		"blueprint_id": {"text", false, false},
		"version":      {"text", false, true},
		"body":         {"jsonb", false, false},
		"created_at":   {"timestamptz", false, true},
	}
)

func TestMigrationFiles(t *testing.T) {
	t.Parallel()
	versions := schema.Versions()
	if len(versions) == 0 || versions[0] != "001_init" {
		t.Fatalf("Versions() = %v, want 001_init first", versions)
	}
	if !slices.IsSorted(versions) {
		t.Errorf("Versions() = %v, not in order", versions)
	}
}

func TestMigrateTwice(t *testing.T) {
	t.Parallel()
	b := setup(t)

	applied, err := schema.Migrate(b.ctx, b.pool, b.tables)
	if err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	if !slices.Equal(applied, schema.Versions()) {
		t.Fatalf("first Migrate applied %v, want %v", applied, schema.Versions())
	}

	applied, err = schema.Migrate(b.ctx, b.pool, b.tables)
	if err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if len(applied) != 0 {
		t.Fatalf("second Migrate applied %v, want nothing", applied)
	}

	for table, want := range map[string]map[string]column{
		b.tables.Contexts:   wantContexts,
		b.tables.Statuses:   wantStatuses,
		b.tables.Steps:      wantSteps,
		b.tables.Blueprints: wantBlueprints,
	} {
		if got := columnsOf(t, b.ctx, b.pool, table); !maps.Equal(got, want) {
			t.Errorf("columns of %s:\n got  %v\n want %v", table, got, want)
		}
	}
	wantPrimaryKey(t, b, b.tables.Steps, "run_id, node_id")
	wantPrimaryKey(t, b, b.tables.Blueprints, "digest")
	wantIndex(t, b, b.tables.Statuses, b.tables.Statuses+"_running_idx", "(created_at) WHERE (status = 'running'::text)")
	wantRecordedOnce(t, appliedRecords(t, b.ctx, b.pool, b.tables.Statuses))
}

// Several processes start at once: each has its own session, all call Migrate together.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg, err := pgx.ParseConfig(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}

	const processes = 8
	conns := make([]*pgx.Conn, processes)
	for i := range conns {
		conns[i] = connect(t, b.ctx, cfg)
	}
	results := make([][]string, processes)
	errs := make([]error, processes)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			<-start
			results[i], errs[i] = schema.Migrate(b.ctx, conns[i], b.tables)
		})
	}
	close(start)
	wg.Wait()

	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Migrate: %v", err)
	}
	var all []string
	for _, r := range results {
		all = append(all, r...)
	}
	slices.Sort(all)
	if !slices.Equal(all, schema.Versions()) {
		t.Errorf("together the processes applied %v, want each of %v once (per process: %v)", all, schema.Versions(), results)
	}
	wantRecordedOnce(t, appliedRecords(t, b.ctx, b.pool, b.tables.Statuses))
	if got := columnsOf(t, b.ctx, b.pool, b.tables.Steps); !maps.Equal(got, wantSteps) {
		t.Errorf("columns of %s = %v, want %v", b.tables.Steps, got, wantSteps)
	}
}

// Different table sets migrating at once into a database that has no migrations table
// yet: they hold different locks, and all of them must still create it without error.
// The test gets a schema of its own, so the migrations table there is really new.
func TestMigrateConcurrentlyFreshDatabase(t *testing.T) {
	t.Parallel()
	b := setup(t)
	dbSchema := strings.TrimSuffix(b.prefix, "_") + "_schema"
	if _, err := b.pool.Exec(b.ctx, "CREATE SCHEMA "+pgx.Identifier{dbSchema}.Sanitize()); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := b.pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{dbSchema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("cleanup: drop schema %s: %v", dbSchema, err)
		}
	})

	cfg, err := pgx.ParseConfig(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = dbSchema

	const sets = 6
	tableSets := make([]schema.Tables, sets)
	conns := make([]*pgx.Conn, sets)
	for i := range sets {
		tableSets[i] = testenv.PrefixedTables(testenv.TablePrefix())
		conns[i] = connect(t, b.ctx, cfg)
	}
	errs := make([]error, sets)
	results := make([][]string, sets)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range sets {
		wg.Go(func() {
			<-start
			results[i], errs[i] = schema.Migrate(b.ctx, conns[i], tableSets[i])
		})
	}
	close(start)
	wg.Wait()

	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Migrate of %d table sets: %v", sets, err)
	}
	for i, ts := range tableSets {
		if !slices.Equal(results[i], schema.Versions()) {
			t.Errorf("table set %s applied %v, want %v", ts.Statuses, results[i], schema.Versions())
		}
		wantRecordedOnce(t, appliedRecords(t, b.ctx, conns[0], ts.Statuses))
		if got := columnsOf(t, b.ctx, conns[0], ts.Statuses); !maps.Equal(got, wantStatuses) {
			t.Errorf("columns of %s = %v, want %v", ts.Statuses, got, wantStatuses)
		}
	}
}

func TestMigrateRejectsHostileNames(t *testing.T) {
	t.Parallel()
	b := setup(t)

	// A table that an injected "drop table" would remove.
	canary := b.prefix + "canary"
	if _, err := b.pool.Exec(b.ctx, "CREATE TABLE "+pgx.Identifier{canary}.Sanitize()+" (id int)"); err != nil {
		t.Fatalf("create canary: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = b.pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{canary}.Sanitize())
	})

	cases := append(slices.Clone(hostileNames), struct{ desc, name string }{
		"injection aimed at the canary", `x"; DROP TABLE "` + canary + `"; --`,
	})
	for _, h := range cases {
		for _, field := range []string{"Contexts", "Statuses", "Steps", "Blueprints", "DeadLetters"} {
			tables := withField(b.tables, field, h.name)
			applied, err := schema.Migrate(b.ctx, b.pool, tables)
			if err == nil {
				t.Errorf("Migrate accepted %s = %q (applied %v)", field, h.name, applied)
				continue
			}
			wantErrorNames(t, err, field, h.name)
		}
	}

	var created []string
	rows, err := b.pool.Query(b.ctx, "SELECT relname::text FROM pg_class WHERE starts_with(relname::text, $1) AND relname <> $2", b.prefix, canary)
	if err != nil {
		t.Fatal(err)
	}
	if created, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(created) > 0 {
		t.Errorf("rejected Migrate calls created %v", created)
	}
	var canaryThere bool
	if err := b.pool.QueryRow(b.ctx, "SELECT to_regclass($1) IS NOT NULL", pgx.Identifier{canary}.Sanitize()).Scan(&canaryThere); err != nil {
		t.Fatal(err)
	}
	if !canaryThere {
		t.Error("canary table was dropped")
	}
	var records int
	var trackingExists bool
	if err := b.pool.QueryRow(b.ctx, "SELECT to_regclass($1) IS NOT NULL", schema.MigrationsTable).Scan(&trackingExists); err != nil {
		t.Fatal(err)
	}
	if trackingExists { // other tests may create it at any time; none records our prefix
		if err := b.pool.QueryRow(b.ctx, "SELECT count(*)::int FROM "+schema.MigrationsTable+" WHERE starts_with(tables, $1)", b.prefix).Scan(&records); err != nil {
			t.Fatal(err)
		}
	}
	if records != 0 {
		t.Errorf("rejected Migrate calls recorded %d migrations", records)
	}
}

// A database that the Flowcraft adapter set up is upgraded in place: its rows stay, and
// the adapter's own INSERTs (naming only its columns) keep working.
func TestMigrateUpgradesFlowcraftTables(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := b.tables.Quoted()

	// Exactly what the adapter creates and writes.
	for _, sql := range []string{
		"CREATE TABLE " + q.Contexts + " (run_id text PRIMARY KEY, context_data jsonb)",
		"CREATE TABLE " + q.Statuses + " (run_id text PRIMARY KEY, status text, status_data jsonb, updated_at timestamptz)",
		"INSERT INTO " + q.Contexts + ` (run_id, context_data) VALUES ('run-old', '{"_outputs.a": 1}')`,
		"INSERT INTO " + q.Statuses + ` (run_id, status, status_data, updated_at) VALUES ('run-old', 'running', '{"n": 2}', '2024-01-02T03:04:05Z')`,
	} {
		if _, err := b.pool.Exec(b.ctx, sql); err != nil {
			t.Fatalf("set up adapter tables: %s: %v", sql, err)
		}
	}

	applied, err := schema.Migrate(b.ctx, b.pool, b.tables)
	if err != nil {
		t.Fatalf("Migrate over adapter tables: %v", err)
	}
	if !slices.Equal(applied, schema.Versions()) {
		t.Fatalf("Migrate applied %v, want %v", applied, schema.Versions())
	}

	// The adapter's rows are still there, unchanged, with defaults in the new columns.
	var contextData, statusData json.RawMessage
	var status string
	var updatedAt time.Time
	var pending int
	var createdAt *time.Time
	var blueprintID *string
	if err := b.pool.QueryRow(b.ctx, "SELECT c.context_data, s.status, s.status_data, s.updated_at, s.pending, s.created_at, s.blueprint_id FROM "+
		q.Contexts+" c JOIN "+q.Statuses+" s USING (run_id) WHERE run_id = 'run-old'").
		Scan(&contextData, &status, &statusData, &updatedAt, &pending, &createdAt, &blueprintID); err != nil {
		t.Fatalf("read the adapter's row after Migrate: %v", err)
	}
	if string(contextData) != `{"_outputs.a": 1}` || status != "running" || string(statusData) != `{"n": 2}` ||
		!updatedAt.Equal(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("adapter row changed: context %s, status %s, status_data %s, updated_at %v", contextData, status, statusData, updatedAt)
	}
	if pending != 0 || createdAt == nil || blueprintID != nil {
		t.Errorf("new columns on the adapter row: pending %d, created_at %v, blueprint_id %v; want 0, a time, NULL", pending, createdAt, blueprintID)
	}

	// The adapter keeps writing, naming only its columns (including an upsert).
	for _, sql := range []string{
		"INSERT INTO " + q.Contexts + ` (run_id, context_data) VALUES ('run-new', '{}')`,
		"INSERT INTO " + q.Statuses + ` (run_id, status, status_data, updated_at) VALUES ('run-new', 'running', NULL, now())`,
		"INSERT INTO " + q.Statuses + ` (run_id, status, updated_at) VALUES ('run-new', 'completed', now())
			ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at`,
		"INSERT INTO " + q.Statuses + ` (run_id, status) VALUES ('run-newer', 'running')`,
	} {
		if _, err := b.pool.Exec(b.ctx, sql); err != nil {
			t.Errorf("adapter INSERT after Migrate: %s: %v", sql, err)
		}
	}

	// Our columns were added; the adapter's keep its (nullable) definitions.
	gotStatuses := columnsOf(t, b.ctx, b.pool, b.tables.Statuses)
	if !slices.Equal(slices.Sorted(maps.Keys(gotStatuses)), slices.Sorted(maps.Keys(wantStatuses))) {
		t.Errorf("columns of upgraded %s = %v, want the names of %v", b.tables.Statuses, gotStatuses, wantStatuses)
	}
	if c := gotStatuses["updated_at"]; !c.HasDefault {
		t.Errorf("upgraded %s.updated_at has no default", b.tables.Statuses)
	}
	if c := columnsOf(t, b.ctx, b.pool, b.tables.Contexts)["context_data"]; !c.HasDefault {
		t.Errorf("upgraded %s.context_data has no default", b.tables.Contexts)
	}
	if got := columnsOf(t, b.ctx, b.pool, b.tables.Steps); !maps.Equal(got, wantSteps) {
		t.Errorf("columns of %s = %v, want %v", b.tables.Steps, got, wantSteps)
	}
	wantIndex(t, b, b.tables.Statuses, b.tables.Statuses+"_running_idx", "(created_at) WHERE (status = 'running'::text)")

	if applied, err := schema.Migrate(b.ctx, b.pool, b.tables); err != nil || len(applied) != 0 {
		t.Errorf("Migrate again: applied %v, err %v; want nothing, nil", applied, err)
	}
}

// Names at the 63-byte limit: derived index names must not be truncated by PostgreSQL
// into each other.
func TestMigrateLongNames(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pad := func(s string) string { return s + strings.Repeat("x", 63-len(s)) }
	tables := schema.Tables{
		Contexts:    pad(b.prefix + "c"),
		Statuses:    pad(b.prefix + "s"),
		Steps:       pad(b.prefix + "t"),
		Blueprints:  pad(b.prefix + "b"),
		DeadLetters: pad(b.prefix + "d"),
	}
	t.Cleanup(func() { dropTableSet(t, b.pool, tables) })

	applied, err := schema.Migrate(b.ctx, b.pool, tables)
	if err != nil {
		t.Fatalf("Migrate with 63-byte names: %v", err)
	}
	if !slices.Equal(applied, schema.Versions()) {
		t.Fatalf("applied %v, want %v", applied, schema.Versions())
	}
	for table, want := range map[string]string{tables.Statuses: "_running_idx", tables.DeadLetters: "_run_idx"} {
		rows, err := b.pool.Query(b.ctx, "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1 AND indexname::text LIKE '%' || $2", table, want)
		if err != nil {
			t.Fatal(err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(names) != 1 || len(names[0]) > 63 || !strings.HasPrefix(names[0], b.prefix) {
			t.Errorf("indexes of %s ending in %s: %v, want one, at most 63 bytes, starting with %s", table, want, names, b.prefix)
		}
	}
}

func TestMigrateInCallersTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(b.ctx)) }()
	applied, err := schema.Migrate(b.ctx, tx, b.tables)
	if err != nil || !slices.Equal(applied, schema.Versions()) {
		t.Fatalf("Migrate in a transaction: applied %v, err %v", applied, err)
	}
	// Rolling the caller's transaction back undoes everything, records included.
	if err := tx.Rollback(b.ctx); err != nil {
		t.Fatal(err)
	}
	if got := columnsOf(t, b.ctx, b.pool, b.tables.Statuses); len(got) != 0 {
		t.Errorf("after rollback %s still has columns %v", b.tables.Statuses, got)
	}
	if applied, err := schema.Migrate(b.ctx, b.pool, b.tables); err != nil || !slices.Equal(applied, schema.Versions()) {
		t.Errorf("Migrate after rollback: applied %v, err %v; want %v", applied, err, schema.Versions())
	}
}

func TestMigrateNilDB(t *testing.T) {
	t.Parallel()
	if _, err := schema.Migrate(t.Context(), nil, schema.DefaultTables()); err == nil {
		t.Fatal("Migrate(nil) returned no error")
	}
}

func wantPrimaryKey(t *testing.T, b *testBundle, table, columns string) {
	t.Helper()
	var def string
	err := b.pool.QueryRow(b.ctx, `SELECT pg_get_constraintdef(oid) FROM pg_constraint
		WHERE conrelid = to_regclass($1) AND contype = 'p'`, pgx.Identifier{table}.Sanitize()).Scan(&def)
	if err != nil {
		t.Errorf("primary key of %s: %v", table, err)
		return
	}
	if def != "PRIMARY KEY ("+columns+")" {
		t.Errorf("primary key of %s = %s, want PRIMARY KEY (%s)", table, def, columns)
	}
}

func wantIndex(t *testing.T, b *testBundle, table, name, defSuffix string) {
	t.Helper()
	var def string
	err := b.pool.QueryRow(b.ctx, `SELECT indexdef FROM pg_indexes
		WHERE schemaname = current_schema() AND tablename = $1 AND indexname = $2`, table, name).Scan(&def)
	if errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("index %s on %s is missing", name, table)
		return
	}
	if err != nil {
		t.Fatalf("index %s: %v", name, err)
	}
	if !strings.HasSuffix(def, defSuffix) {
		t.Errorf("index %s = %s, want it to end in %s", name, def, defSuffix)
	}
}
