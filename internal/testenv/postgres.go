package testenv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stepflow/stepflow/schema"
)

// Pool opens a pool of at most maxConns connections on PostgresURL, after
// configure has adjusted its configuration, and closes it when the test
// ends. The test fails at once when PostgreSQL does not answer.
func Pool(t testing.TB, maxConns int32, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(PostgresURL())
	if err != nil {
		t.Fatalf("POSTGRES_URL: %v", err)
	}
	cfg.MaxConns = maxConns
	for _, c := range configure {
		c(cfg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	pool, err := connect(ctx, cfg)
	if err != nil {
		t.Fatalf("PostgreSQL at %s does not answer: %v (set POSTGRES_URL)", PostgresURL(), err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func connect(ctx context.Context, cfg *pgxpool.Config) (*pgxpool.Pool, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// SharedPool is one pool for all the tests of a package (each with tables
// of its own), opened when a test first asks for it. TestMain closes it
// after m.Run.
type SharedPool struct {
	MaxConns int32

	once sync.Once
	pool *pgxpool.Pool
	err  error
}

// Get returns the pool, opening it on first use; the test fails at once
// when PostgreSQL does not answer.
func (s *SharedPool) Get(t testing.TB) *pgxpool.Pool {
	t.Helper()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cfg, err := pgxpool.ParseConfig(PostgresURL())
		if err != nil {
			s.err = err
			return
		}
		cfg.MaxConns = s.MaxConns
		s.pool, s.err = connect(ctx, cfg)
	})
	if s.err != nil {
		t.Fatalf("PostgreSQL at %s does not answer: %v (the tests need the real service; set POSTGRES_URL)", PostgresURL(), s.err)
	}
	return s.pool
}

// Close closes the pool if a test opened it.
func (s *SharedPool) Close() {
	if s.pool != nil {
		s.pool.Close()
	}
}

// TablePrefix returns a fresh table name prefix, t_<8 hex>_.
func TablePrefix() string { return "t_" + RandomHex(4) + "_" }

// PrefixedTables names a table set: prefix followed by contexts, statuses,
// steps, blueprints and dead_letters.
func PrefixedTables(prefix string) schema.Tables {
	return schema.Tables{
		Contexts:    prefix + "contexts",
		Statuses:    prefix + "statuses",
		Steps:       prefix + "steps",
		Blueprints:  prefix + "blueprints",
		DeadLetters: prefix + "dead_letters",
	}
}

// Tables migrates a fresh table set (PrefixedTables of a TablePrefix) with
// pool, as MigrateTables does, and returns its names.
func Tables(t testing.TB, pool *pgxpool.Pool) schema.Tables {
	t.Helper()
	tables := PrefixedTables(TablePrefix())
	MigrateTables(t, pool, tables)
	return tables
}

// MigrateTables creates tables with schema.Migrate and, when the test ends,
// drops them and deletes their records in schema.MigrationsTable (with
// pool, which must still be open then: call it after registering the
// pool's Close). The test fails at once when the migration fails.
func MigrateTables(t testing.TB, pool *pgxpool.Pool, tables schema.Tables) {
	t.Helper()
	t.Cleanup(func() { dropTables(t, pool, tables) }) // also what a failed migration left
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := schema.Migrate(ctx, pool, tables); err != nil {
		t.Fatalf("migrate: %v", err)
	}
}

func dropTables(t testing.TB, pool *pgxpool.Pool, tables schema.Tables) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := DropTables(ctx, pool, tables); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// DropTables drops a table set that schema.Migrate created, with its
// records in schema.MigrationsTable: the cleanup of MigrateTables, for
// what has no testing.TB (an example).
func DropTables(ctx context.Context, pool *pgxpool.Pool, tables schema.Tables) error {
	q := tables.Quoted()
	var errs []error
	if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+q.Contexts+", "+q.Statuses+", "+q.Steps+", "+q.Blueprints+", "+q.DeadLetters); err != nil {
		errs = append(errs, fmt.Errorf("drop tables of %s: %w", tables.Statuses, err))
	}
	for _, fn := range tables.Functions() {
		if _, err := pool.Exec(ctx, "DROP FUNCTION IF EXISTS "+fn+"()"); err != nil {
			errs = append(errs, fmt.Errorf("drop function %s: %w", fn, err))
		}
	}
	if _, err := pool.Exec(ctx, "DELETE FROM "+schema.MigrationsTable+" WHERE tables = $1", tables.Statuses); err != nil {
		errs = append(errs, fmt.Errorf("migration records of %s: %w", tables.Statuses, err))
	}
	return errors.Join(errs...)
}
