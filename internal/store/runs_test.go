package store

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

func newListFixture(t *testing.T) (context.Context, *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	pool := testenv.Pool(t, 2)
	s, err := New(pool, testenv.Tables(t, pool))
	if err != nil {
		t.Fatal(err)
	}
	return ctx, s
}

func listedIDs(runs []*Run) []string {
	out := []string{}
	for _, r := range runs {
		out = append(out, r.RunID)
	}
	return out
}

// TestListRuns pages through runs newest first, ties in created_at broken
// by run id, with the status and blueprint filters.
func TestListRuns(t *testing.T) {
	t.Parallel()
	ctx, s := newListFixture(t)
	one := compileBlueprint(t, `{"id":"one","nodes":[{"id":"a","uses":"noop"}]}`)
	two := compileBlueprint(t, `{"id":"two","nodes":[{"id":"a","uses":"noop"}]}`)
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// r1 oldest … r5 newest; r3 and r4 share a created_at (r4 sorts first).
	for i, r := range []struct {
		id string
		w  *workflow.Workflow
		at time.Duration
	}{{"r1", one, 0}, {"r2", two, time.Second}, {"r3", one, 2 * time.Second}, {"r4", two, 2 * time.Second}, {"r5", one, 3 * time.Second}} {
		if _, err := s.CreateRun(ctx, r.id, r.w, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.pool.Exec(ctx, `UPDATE `+s.tables.Statuses+` SET created_at = $2 WHERE run_id = $1`, r.id, base.Add(r.at)); err != nil {
			t.Fatal(i, err)
		}
	}
	if _, err := s.Cancel(ctx, "r3"); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		filter RunFilter
		pages  [][]string
	}{
		{"all in one page", RunFilter{}, [][]string{{"r5", "r4", "r3", "r2", "r1"}}},
		{"pages of two", RunFilter{Limit: 2}, [][]string{{"r5", "r4"}, {"r3", "r2"}, {"r1"}}},
		{"a page ends inside a tie", RunFilter{Limit: 3}, [][]string{{"r5", "r4", "r3"}, {"r2", "r1"}}},
		{"exact pages", RunFilter{Limit: 5}, [][]string{{"r5", "r4", "r3", "r2", "r1"}}},
		{"by status", RunFilter{Status: workflow.RunRunning, Limit: 3}, [][]string{{"r5", "r4", "r2"}, {"r1"}}},
		{"cancelled", RunFilter{Status: workflow.RunCancelled}, [][]string{{"r3"}}},
		{"by blueprint", RunFilter{BlueprintID: "one", Limit: 1}, [][]string{{"r5"}, {"r3"}, {"r1"}}},
		{"both", RunFilter{BlueprintID: "one", Status: workflow.RunRunning}, [][]string{{"r5", "r1"}}},
		{"none", RunFilter{BlueprintID: "three"}, [][]string{{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.filter
			for i, want := range tc.pages {
				runs, more, err := s.ListRuns(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				if got := listedIDs(runs); !slices.Equal(got, want) {
					t.Fatalf("page %d: %v, want %v", i, got, want)
				}
				if wantMore := i < len(tc.pages)-1; more != wantMore {
					t.Fatalf("page %d: more = %v, want %v", i, more, wantMore)
				}
				if more {
					last := runs[len(runs)-1]
					f.Before = &RunCursor{CreatedAt: last.CreatedAt, RunID: last.RunID}
				}
			}
		})
	}
}

func TestLatestBlueprint(t *testing.T) {
	t.Parallel()
	ctx, s := newListFixture(t)
	v1 := compileBlueprint(t, `{"id":"greet","metadata":{"version":"1"},"nodes":[{"id":"a","uses":"noop"}]}`)
	v2 := compileBlueprint(t, `{"id":"greet","metadata":{"version":"2"},"nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop"}]}`)
	if _, err := s.LatestBlueprint(ctx, "greet"); !errors.Is(err, ErrBlueprintNotFound) {
		t.Fatalf("before any run: %v, want ErrBlueprintNotFound", err)
	}
	if _, err := s.CreateRun(ctx, "first", v1, nil); err != nil {
		t.Fatal(err)
	}
	if bp, err := s.LatestBlueprint(ctx, "greet"); err != nil || bp.Version() != "1" {
		t.Fatalf("after a run of v1: %+v, %v", bp, err)
	}
	if _, err := s.CreateRun(ctx, "second", v2, nil); err != nil {
		t.Fatal(err)
	}
	if bp, err := s.LatestBlueprint(ctx, "greet"); err != nil || bp.Version() != "2" || len(bp.Nodes) != 2 {
		t.Fatalf("after a run of v2: %+v, %v; want version 2", bp, err)
	}
}
