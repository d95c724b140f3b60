package schema_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/schema"
)

func TestDefaultTables(t *testing.T) {
	t.Parallel()
	got := schema.DefaultTables()
	want := schema.Tables{
		Contexts:    "flowcraft_contexts",
		Statuses:    "flowcraft_statuses",
		Steps:       "stepflow_steps",
		Blueprints:  "stepflow_blueprints",
		DeadLetters: "stepflow_dead_letters",
	}
	if got != want {
		t.Fatalf("DefaultTables() = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

// hostileNames are names Validate must reject; the test of Migrate reuses them.
var hostileNames = []struct {
	desc, name string
}{
	{"statement injection", "x; drop table y"},
	{"quoted", `"quoted"`},
	{"quote breakout", `x"; drop table y; --`},
	{"upper case", "Upper"},
	{"empty", ""},
	{"64 characters", strings.Repeat("a", 64)},
	{"qualified", "a.b"},
	{"leading digit", "1abc"},
	{"dash", "a-b"},
	{"space", "a b"},
	{"non-ASCII", "naïve"},
	{"NUL", "a\x00b"},
	{"newline", "a\nb"},
}

func TestValidateRejects(t *testing.T) {
	t.Parallel()
	for _, h := range hostileNames {
		for _, field := range []string{"Contexts", "Statuses", "Steps", "Blueprints", "DeadLetters"} {
			t.Run(h.desc+"/"+field, func(t *testing.T) {
				t.Parallel()
				tables := withField(schema.DefaultTables(), field, h.name)
				err := tables.Validate()
				if err == nil {
					t.Fatalf("Validate accepted %s = %q", field, h.name)
				}
				wantErrorNames(t, err, field, h.name)
			})
		}
	}
}

func TestValidateAccepts(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"a", "_", "runs", "my_runs_2", "_x9", strings.Repeat("a", 63), "select", "user"} {
		tables := withField(schema.DefaultTables(), "Statuses", name)
		if err := tables.Validate(); err != nil {
			t.Errorf("Validate rejected Statuses = %q: %v", name, err)
		}
	}
}

func TestValidateRejectsDuplicateAndReserved(t *testing.T) {
	t.Parallel()
	dup := schema.DefaultTables()
	dup.Steps = dup.Contexts
	err := dup.Validate()
	if err == nil || !strings.Contains(err.Error(), "Steps") || !strings.Contains(err.Error(), "Contexts") {
		t.Errorf("duplicate names: err = %v, want one naming Steps and Contexts", err)
	}

	reserved := schema.DefaultTables()
	reserved.Blueprints = schema.MigrationsTable
	if err := reserved.Validate(); err == nil || !strings.Contains(err.Error(), "Blueprints") {
		t.Errorf("migrations table name: err = %v, want one naming Blueprints", err)
	}
}

func TestValidateReportsEveryBadField(t *testing.T) {
	t.Parallel()
	err := schema.Tables{Contexts: "A", Statuses: "ok", Steps: "", Blueprints: "b.c"}.Validate()
	for _, want := range []string{`Contexts = "A"`, `Steps = ""`, `Blueprints = "b.c"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "Statuses") {
		t.Errorf("err = %v names the valid field Statuses", err)
	}
}

func TestQuoted(t *testing.T) {
	t.Parallel()
	got := schema.DefaultTables().Quoted()
	want := schema.QuotedTables{
		Contexts:    `"flowcraft_contexts"`,
		Statuses:    `"flowcraft_statuses"`,
		Steps:       `"stepflow_steps"`,
		Blueprints:  `"stepflow_blueprints"`,
		DeadLetters: `"stepflow_dead_letters"`,
	}
	if got != want {
		t.Fatalf("Quoted() = %+v, want %+v", got, want)
	}
	// Quoting alone keeps even a hostile name one identifier (Validate still rejects it).
	if q := (schema.Tables{Statuses: `x"; drop table y; --`}).Quoted().Statuses; q != `"x""; drop table y; --"` {
		t.Errorf("Quoted hostile = %s", q)
	}
}

func withField(t schema.Tables, field, value string) schema.Tables {
	switch field {
	case "Contexts":
		t.Contexts = value
	case "Statuses":
		t.Statuses = value
	case "Steps":
		t.Steps = value
	case "Blueprints":
		t.Blueprints = value
	case "DeadLetters":
		t.DeadLetters = value
	default:
		panic("unknown field " + field)
	}
	return t
}

func wantErrorNames(t *testing.T, err error, field, value string) {
	t.Helper()
	if !errors.Is(err, schema.ErrInvalidTableName) {
		t.Errorf("err = %v, want it to wrap ErrInvalidTableName", err)
	}
	if msg := err.Error(); !strings.Contains(msg, field) || !strings.Contains(msg, strconv.Quote(value)) {
		t.Errorf("err = %q, want it to name field %s and value %s", msg, field, strconv.Quote(value))
	}
}
