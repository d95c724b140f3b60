package store

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// exec runs a statement of the test's own and fails the test on error.
func (f *commitFixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.ctx, sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

// age sets a run's last step an age back.
func (f *commitFixture) age(runID string, age time.Duration) {
	f.t.Helper()
	f.exec(`UPDATE `+f.s.tables.Statuses+` SET updated_at = now() - make_interval(secs => $2) WHERE run_id = $1`, runID, age.Seconds())
}

func (f *commitFixture) claim(threshold time.Duration, limit int, skip ...string) []StalledRun {
	f.t.Helper()
	runs, err := f.s.ClaimStalled(f.ctx, threshold, limit, skip)
	if err != nil {
		f.t.Fatalf("claim stalled runs: %v", err)
	}
	return runs
}

func runIDs(runs []StalledRun) []string {
	out := make([]string, len(runs))
	for i, r := range runs {
		out[i] = r.RunID
	}
	return out
}

// ClaimStalled claims the running runs idle past the threshold, longest
// idle first, up to the limit and without those to skip, and a claimed
// run is not claimed again until a threshold has passed.
func TestClaimStalled(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, chainBlueprint)
	for _, id := range []string{"old", "older", "fresh", "done", "claimed", "skipped"} {
		f.createRun(id, w, nil)
	}
	f.age("old", time.Hour)
	f.age("older", 2*time.Hour)
	f.age("skipped", 3*time.Hour)
	f.age("done", 4*time.Hour)
	f.exec(`UPDATE ` + f.s.tables.Statuses + ` SET status = 'completed' WHERE run_id = 'done'`)
	f.age("claimed", 5*time.Hour)
	f.exec(`UPDATE ` + f.s.tables.Statuses + ` SET reconciled_at = now() WHERE run_id = 'claimed'`)

	first := f.claim(time.Minute, 1, "skipped")
	if want := []StalledRun{{RunID: "older", BlueprintID: "chain", Digest: w.Digest, Pinned: true}}; !slices.Equal(first, want) {
		t.Fatalf("first claim %+v, want %+v", first, want)
	}
	if rest := runIDs(f.claim(time.Minute, 10, "skipped")); !slices.Equal(rest, []string{"old"}) {
		t.Fatalf("second claim %q, want old (older is claimed already)", rest)
	}
	if again := f.claim(time.Minute, 10, "skipped"); len(again) != 0 {
		t.Fatalf("third claim %+v, want none: every stalled run is claimed", again)
	}
	if none := f.claim(6*time.Hour, 10); len(none) != 0 {
		t.Fatalf("claim past a longer threshold %+v, want none", none)
	}
	// No list to skip leaves out nothing.
	if runs := runIDs(f.claim(time.Minute, 10)); !slices.Equal(runs, []string{"skipped"}) {
		t.Fatalf("claim without a skip list %q, want skipped", runs)
	}
}

// Reconcilers claiming at once share the stalled runs: each is claimed
// exactly once.
func TestClaimStalledConcurrently(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, chainBlueprint)
	var want []string
	for i := range 24 {
		id := "run-" + string(rune('a'+i))
		f.createRun(id, w, nil)
		f.age(id, time.Hour)
		want = append(want, id)
	}
	claimed := make([][]StalledRun, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range claimed {
		wg.Go(func() {
			for {
				runs, err := f.s.ClaimStalled(f.ctx, time.Minute, 2, nil)
				if err != nil || len(runs) == 0 {
					errs[i] = err
					return
				}
				claimed[i] = append(claimed[i], runs...)
			}
		})
	}
	wg.Wait()
	var got []string
	for i := range claimed {
		if errs[i] != nil {
			t.Fatalf("claimer %d: %v", i, errs[i])
		}
		got = append(got, runIDs(claimed[i])...)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("claimed %q, want each of %q once", got, want)
	}
}

// A run started the Flowcraft way (a context and a running status, no
// snapshot) is claimed unpinned; its blueprint id is read from its context.
func TestClaimStalledUnpinnedRun(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	f.exec(`INSERT INTO ` + f.s.tables.Contexts + ` (run_id, context_data) VALUES ('fc', '{"blueprintId": "legacy"}')`)
	f.exec(`INSERT INTO ` + f.s.tables.Statuses + ` (run_id, status, updated_at) VALUES ('fc', 'running', now() - interval '1 hour')`)
	if runs := f.claim(time.Minute, 10); !slices.Equal(runs, []StalledRun{{RunID: "fc"}}) {
		t.Fatalf("claimed %+v, want fc unpinned", runs)
	}
	if id, err := f.s.ContextBlueprintID(f.ctx, "fc"); err != nil || id != "legacy" {
		t.Fatalf("blueprint id of fc: %q, %v; want legacy", id, err)
	}
	if id, err := f.s.ContextBlueprintID(f.ctx, "no-such-run"); err != nil || id != "" {
		t.Fatalf("blueprint id of a run without a context: %q, %v; want none", id, err)
	}
}

// Releasing a claim of a repaired run makes it move (not stalled any
// more); releasing one that was not repaired leaves it stalled, to be
// claimed again at once; a run that finished meanwhile is not touched.
func TestReleaseClaim(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, chainBlueprint)
	for _, id := range []string{"moved", "waiting", "finished"} {
		f.createRun(id, w, nil)
		f.age(id, time.Hour)
	}
	if runs := runIDs(f.claim(time.Minute, 10)); len(runs) != 3 {
		t.Fatalf("claimed %q, want all three", runs)
	}
	f.exec(`UPDATE ` + f.s.tables.Statuses + ` SET status = 'completed' WHERE run_id = 'finished'`)
	before := f.run("finished").UpdatedAt
	for id, moved := range map[string]bool{"moved": true, "waiting": false, "finished": true} {
		if err := f.s.ReleaseClaim(f.ctx, id, moved); err != nil {
			t.Fatalf("release %s: %v", id, err)
		}
	}
	if r := f.run("moved"); time.Since(r.UpdatedAt) > time.Minute {
		t.Errorf("repaired run updated at %s, want now", r.UpdatedAt)
	}
	if r := f.run("finished"); !r.UpdatedAt.Equal(before) || r.Status != workflow.RunCompleted {
		t.Errorf("finished run %s updated at %s, want completed and untouched at %s", r.Status, r.UpdatedAt, before)
	}
	if runs := runIDs(f.claim(time.Minute, 10)); !slices.Equal(runs, []string{"waiting"}) {
		t.Fatalf("claimed after release %q, want waiting only", runs)
	}
}

// Ping answers while the store is open and fails once it is closed.
func TestPingAndClose(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 2)
	if err := f.s.Ping(f.ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	s, err := New(testenv.Pool(t, 1), f.tables)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Ping(f.ctx); err == nil {
		t.Fatal("ping of a closed store succeeded")
	}
}
