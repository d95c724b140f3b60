package schema_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/schema"
)

// Both handles the rest of stepflow uses must be accepted by Migrate.
var (
	_ schema.DB = (*pgx.Conn)(nil)
	_ schema.DB = (*pgxpool.Pool)(nil)
	_ schema.DB = pgx.Tx(nil)
)

// redacted is the DSN fit for a failure message: without its password, if it has one.
func redacted(dsn string) string {
	if u, err := url.Parse(dsn); err == nil {
		return u.Redacted()
	}
	return "POSTGRES_URL (unparsable)"
}

// testBundle is what a test gets from setup: a pool on the real database, a bounded
// context and a table set of its own (dropped when the test ends).
type testBundle struct {
	ctx    context.Context
	pool   *pgxpool.Pool
	prefix string
	tables schema.Tables
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)

	pool := connectPool(t, ctx, testenv.PostgresURL())
	prefix := testenv.TablePrefix()
	tables := testenv.PrefixedTables(prefix)
	t.Cleanup(func() { dropTableSet(t, pool, tables) })
	return &testBundle{ctx: ctx, pool: pool, prefix: prefix, tables: tables}
}

func connectPool(t *testing.T, ctx context.Context, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatalf("PostgreSQL: bad POSTGRES_URL %s: %v", redacted(dsn), err)
	}
	t.Cleanup(pool.Close)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		t.Fatalf("PostgreSQL does not answer at %s (set POSTGRES_URL, or start it: bash .ci/run): %v", redacted(dsn), err)
	}
	return pool
}

func connect(t *testing.T, ctx context.Context, cfg *pgx.ConnConfig) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("PostgreSQL does not answer at %s: %v", redacted(testenv.PostgresURL()), err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// dropTableSet removes the tables and the migration records of one table set. It runs
// in t.Cleanup, after t.Context() is cancelled, hence its own context.
func dropTableSet(t *testing.T, pool *pgxpool.Pool, tables schema.Tables) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := tables.Quoted()
	if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+q.Contexts+", "+q.Statuses+", "+q.Steps+", "+q.Blueprints+", "+q.DeadLetters); err != nil {
		t.Errorf("cleanup: drop tables of %s: %v", tables.Statuses, err)
	}
	for _, fn := range tables.Functions() {
		if _, err := pool.Exec(ctx, "DROP FUNCTION IF EXISTS "+fn+"()"); err != nil {
			t.Errorf("cleanup: drop function %s: %v", fn, err)
		}
	}
	if _, err := pool.Exec(ctx, `DO $$ BEGIN
  IF to_regclass('`+schema.MigrationsTable+`') IS NOT NULL THEN
    DELETE FROM `+schema.MigrationsTable+` WHERE tables = '`+tables.Statuses+`';
  END IF;
END $$`); err != nil {
		t.Errorf("cleanup: delete migration records of %s: %v", tables.Statuses, err)
	}
}

// column is what information_schema says of one column.
type column struct {
	Type       string // udt_name: text, jsonb, int4, timestamptz, _text
	Nullable   bool
	HasDefault bool
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func columnsOf(t *testing.T, ctx context.Context, db querier, table string) map[string]column {
	t.Helper()
	rows, err := db.Query(ctx, `SELECT column_name, udt_name, is_nullable = 'YES', column_default IS NOT NULL
		FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1`, table)
	if err != nil {
		t.Fatalf("columns of %s: %v", table, err)
	}
	out := map[string]column{}
	var name string
	var c column
	if _, err := pgx.ForEachRow(rows, []any{&name, &c.Type, &c.Nullable, &c.HasDefault}, func() error {
		out[name] = c
		return nil
	}); err != nil {
		t.Fatalf("columns of %s: %v", table, err)
	}
	return out
}

// appliedRecords returns how often each version is recorded for a table set.
func appliedRecords(t *testing.T, ctx context.Context, db querier, statuses string) map[string]int {
	t.Helper()
	rows, err := db.Query(ctx, "SELECT version, count(*)::int FROM "+schema.MigrationsTable+" WHERE tables = $1 GROUP BY version", statuses)
	if err != nil {
		t.Fatalf("migration records of %s: %v", statuses, err)
	}
	out := map[string]int{}
	var v string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&v, &n}, func() error { out[v] = n; return nil }); err != nil {
		t.Fatalf("migration records of %s: %v", statuses, err)
	}
	return out
}

func wantRecordedOnce(t *testing.T, got map[string]int) {
	t.Helper()
	want := schema.Versions()
	if len(got) != len(want) {
		t.Errorf("recorded versions = %v, want each of %v once", got, want)
	}
	for _, v := range want {
		if got[v] != 1 {
			t.Errorf("version %s recorded %d times, want 1", v, got[v])
		}
	}
}
