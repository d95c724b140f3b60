package schema

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

// Default table names. Contexts and Statuses are the Flowcraft adapter's, so a database
// that adapter set up serves unchanged.
const (
	DefaultContextsTable    = "flowcraft_contexts"
	DefaultStatusesTable    = "flowcraft_statuses"
	DefaultStepsTable       = "stepflow_steps"
	DefaultBlueprintsTable  = "stepflow_blueprints"
	DefaultDeadLettersTable = "stepflow_dead_letters"
)

// MigrationsTable records which migration was applied to which table set. Its name is
// fixed: it is shared by every table set in the database.
const MigrationsTable = "stepflow_schema_migrations"

// Tables names the tables of one stepflow installation. The names are plain, unquoted
// SQL identifiers; see Validate.
type Tables struct {
	Contexts    string // one row per run: its JSON context (Flowcraft adapter compatible)
	Statuses    string // one row per run: status and bookkeeping (Flowcraft adapter compatible)
	Steps       string // one row per (run, node): state, attempts, result, routing decision
	Blueprints  string // immutable blueprint snapshots by digest
	DeadLetters string // dead-lettered jobs, recorded by the reconciler for list and replay
}

// DefaultTables returns the default names, compatible with the Flowcraft adapter.
func DefaultTables() Tables {
	return Tables{
		Contexts:    DefaultContextsTable,
		Statuses:    DefaultStatusesTable,
		Steps:       DefaultStepsTable,
		Blueprints:  DefaultBlueprintsTable,
		DeadLetters: DefaultDeadLettersTable,
	}
}

// identifierPattern admits lower-case identifiers that PostgreSQL keeps as written
// (at most 63 bytes, NAMEDATALEN-1), so a name never needs case folding or truncation.
var identifierPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ErrInvalidTableName is wrapped by every error that Validate returns.
var ErrInvalidTableName = errors.New("invalid table name")

// Validate reports whether every name is a plain SQL identifier
// (^[a-z_][a-z0-9_]{0,62}$), the names are distinct and none is MigrationsTable.
// The error names the field and quotes the offending value.
func (t Tables) Validate() error {
	fields := t.fields()
	seen := make(map[string]string, len(fields))
	var errs []error
	for _, f := range fields {
		switch {
		case !identifierPattern.MatchString(f.value):
			errs = append(errs, fmt.Errorf("schema: %w: %s = %q: must match %s",
				ErrInvalidTableName, f.name, f.value, identifierPattern))
		case f.value == MigrationsTable:
			errs = append(errs, fmt.Errorf("schema: %w: %s = %q: reserved for the migrations table",
				ErrInvalidTableName, f.name, f.value))
		case seen[f.value] != "":
			errs = append(errs, fmt.Errorf("schema: %w: %s = %q: same name as %s",
				ErrInvalidTableName, f.name, f.value, seen[f.value]))
		default:
			seen[f.value] = f.name
		}
	}
	return errors.Join(errs...)
}

type field struct{ name, value string }

func (t Tables) fields() []field {
	return []field{
		{"Contexts", t.Contexts},
		{"Statuses", t.Statuses},
		{"Steps", t.Steps},
		{"Blueprints", t.Blueprints},
		{"DeadLetters", t.DeadLetters},
	}
}

// QuotedTables holds the table names as quoted SQL identifiers, ready to be placed in
// SQL text. Build it with Tables.Quoted after Tables.Validate passed.
type QuotedTables struct {
	Contexts    string
	Statuses    string
	Steps       string
	Blueprints  string
	DeadLetters string
}

// Quoted returns each name quoted with pgx.Identifier.Sanitize. Quoting makes any string
// a single identifier, but it does not make it a good one: call Validate first.
func (t Tables) Quoted() QuotedTables {
	return QuotedTables{
		Contexts:    quote(t.Contexts),
		Statuses:    quote(t.Statuses),
		Steps:       quote(t.Steps),
		Blueprints:  quote(t.Blueprints),
		DeadLetters: quote(t.DeadLetters),
	}
}

func quote(name string) string { return pgx.Identifier{name}.Sanitize() }

// Functions are the quoted names of the functions Migrate creates for the
// table set (010's trigger function), which dropping its tables leaves
// behind: DROP FUNCTION IF EXISTS <name>() removes one.
func (t Tables) Functions() []string {
	name, err := derivedName(t.Statuses, "child_awaits")
	if err != nil {
		return nil
	}
	return []string{quote(name)}
}
