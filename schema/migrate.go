package schema

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/jackc/pgx/v5"
)

// DB is what Migrate needs from a database handle. *pgx.Conn and *pgxpool.Pool satisfy
// it (so does pgx.Tx, in which case Migrate works in a savepoint and its lock lasts until
// the caller's transaction ends).
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migrate applies, in one transaction, the migrations that the table set t has not
// recorded yet, and returns their versions in the order applied (none when the schema is
// up to date). It validates t before touching the database.
//
// Concurrent calls for the same table set are serialised by a transaction-scoped advisory
// lock whose key derives from t.Statuses: the first applies, the others wait, then find
// everything recorded and apply nothing. Tables live in the connection's current schema
// (the first schema of search_path).
func Migrate(ctx context.Context, db DB, t Tables) (applied []string, err error) {
	if db == nil {
		return nil, errors.New("schema: migrate: nil database")
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	plan, err := render(t)
	if err != nil {
		return nil, err
	}
	if err := ensureMigrationsTable(ctx, db); err != nil {
		return nil, err
	}

	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("schema: migrate %s: begin: %w", t.Statuses, err)
	}
	// A no-op after Commit; WithoutCancel so a cancelled ctx still releases the lock now.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(t.Statuses)); err != nil {
		return nil, fmt.Errorf("schema: migrate %s: take lock: %w", t.Statuses, err)
	}
	rows, _ := tx.Query(ctx, "SELECT version FROM "+quote(MigrationsTable)+" WHERE tables = $1", t.Statuses)
	done, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("schema: migrate %s: read applied versions: %w", t.Statuses, err)
	}

	for _, m := range plan {
		if slices.Contains(done, m.version) {
			continue
		}
		// No arguments: pgx sends it with the simple protocol, which runs every statement
		// of the file.
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return nil, fmt.Errorf("schema: migrate %s: apply %s: %w", t.Statuses, m.version, err)
		}
		if _, err := tx.Exec(ctx,
			"INSERT INTO "+quote(MigrationsTable)+" (tables, version) VALUES ($1, $2)",
			t.Statuses, m.version); err != nil {
			return nil, fmt.Errorf("schema: migrate %s: record %s: %w", t.Statuses, m.version, err)
		}
		applied = append(applied, m.version)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("schema: migrate %s: commit: %w", t.Statuses, err)
	}
	return applied, nil
}

// Versions returns the versions of the embedded migrations (file names without ".sql"),
// in the order Migrate applies them.
func Versions() []string {
	out := make([]string, len(migrations))
	for i, m := range migrations {
		out[i] = m.version
	}
	return out
}

// ensureMigrationsTable creates the shared tracking table. It is shared by every table
// set, whose Migrate calls hold different locks, and concurrent CREATE TABLE IF NOT EXISTS
// of one table can fail on PostgreSQL's catalog constraints; hence its own fixed lock, in
// its own short transaction so no lock is ever taken while another is held.
func ensureMigrationsTable(ctx context.Context, db DB) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("schema: create %s: begin: %w", MigrationsTable, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", quote(MigrationsTable)).Scan(&exists); err != nil {
		return fmt.Errorf("schema: create %s: look up: %w", MigrationsTable, err)
	}
	if exists {
		return nil
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationsTableLockKey); err != nil {
		return fmt.Errorf("schema: create %s: take lock: %w", MigrationsTable, err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+quote(MigrationsTable)+` (
    tables     text        NOT NULL,
    version    text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tables, version)
)`); err != nil {
		return fmt.Errorf("schema: create %s: %w", MigrationsTable, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("schema: create %s: commit: %w", MigrationsTable, err)
	}
	return nil
}

// lockKey is the advisory lock key of one table set. Lock keys are one bigint space for
// the whole database; the prefix keeps ours apart from other users of advisory locks.
func lockKey(statuses string) int64 { return hash64("stepflow/schema:" + statuses) }

var migrationsTableLockKey = hash64("stepflow/schema/" + MigrationsTable)

func hash64(s string) int64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return int64(h.Sum64())
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version string
	tmpl    *template.Template
}

type renderedMigration struct {
	version string
	sql     string
}

var migrations = mustLoadMigrations(migrationFiles)

var migrationName = regexp.MustCompile(`^[0-9]{3}_[a-z0-9_]+\.sql$`)

// mustLoadMigrations parses the embedded files once; a bad file is a build defect, so it
// panics (and TestMigrationFiles fails) rather than failing at the first Migrate.
func mustLoadMigrations(fsys fs.FS) []migration {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		panic(err)
	}
	slices.Sort(names)
	out := make([]migration, 0, len(names))
	for _, name := range names {
		base := path.Base(name)
		if !migrationName.MatchString(base) {
			panic(fmt.Sprintf("schema: migration file %s: name must match %s", name, migrationName))
		}
		if len(out) > 0 && out[len(out)-1].version[:3] == base[:3] {
			panic(fmt.Sprintf("schema: migration files %s and %s share a number", out[len(out)-1].version, base))
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			panic(err)
		}
		tmpl, err := template.New(base).Option("missingkey=error").Funcs(templateFuncs).Parse(string(body))
		if err != nil {
			panic(fmt.Sprintf("schema: migration file %s: %v", name, err))
		}
		out = append(out, migration{version: strings.TrimSuffix(base, ".sql"), tmpl: tmpl})
	}
	return out
}

// templateData is what a migration file sees: {{.Contexts}} and the other fields are
// quoted identifiers; .Raw holds the validated plain names, for deriving other names
// with {{ident .Raw.Statuses "stalled_idx"}}.
type templateData struct {
	QuotedTables
	Raw Tables
}

var templateFuncs = template.FuncMap{
	"ident": func(base, suffix string) (string, error) {
		name, err := derivedName(base, suffix)
		if err != nil {
			return "", err
		}
		return quote(name), nil
	},
}

// maxIdentifierLen is PostgreSQL's NAMEDATALEN-1; longer names are silently truncated,
// which could make two derived names collide.
const maxIdentifierLen = 63

var suffixPattern = regexp.MustCompile(`^[a-z0-9_]{1,20}$`)

// derivedName names an object after its table: base_suffix, or, when that is too long,
// a prefix of base, a hash of the whole base and the suffix, so distinct bases keep
// distinct names.
func derivedName(base, suffix string) (string, error) {
	if !identifierPattern.MatchString(base) || !suffixPattern.MatchString(suffix) {
		return "", fmt.Errorf("schema: cannot derive a name from %q and %q", base, suffix)
	}
	name := base + "_" + suffix
	if len(name) <= maxIdentifierLen {
		return name, nil
	}
	tag := fmt.Sprintf("%08x", uint32(hash64(base)))
	keep := maxIdentifierLen - len(suffix) - len(tag) - 2
	return base[:keep] + "_" + tag + "_" + suffix, nil
}

func render(t Tables) ([]renderedMigration, error) {
	data := templateData{QuotedTables: t.Quoted(), Raw: t}
	out := make([]renderedMigration, 0, len(migrations))
	for _, m := range migrations {
		var buf bytes.Buffer
		if err := m.tmpl.Execute(&buf, data); err != nil {
			return nil, fmt.Errorf("schema: render %s: %w", m.version, err)
		}
		out = append(out, renderedMigration{version: m.version, sql: buf.String()})
	}
	return out, nil
}
