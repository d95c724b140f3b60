package reconciler_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

// pass is one pass a Service reported.
type pass struct {
	st  reconciler.Stats
	err error
}

// startService runs a Service of rec every second on a local port until
// the test ends, and returns its base URL and its passes as they end.
func startService(t *testing.T, rec *reconciler.Reconciler, reg *prometheus.Registry) (string, <-chan pass) {
	t.Helper()
	passes := make(chan pass, 16)
	svc, err := reconciler.NewService(rec, reconciler.ServiceOptions{
		Schedule: "@every 1s", Registry: reg,
		AfterPass: func(st reconciler.Stats, err error) {
			select {
			case passes <- pass{st, err}:
			default: // the test has seen enough
			}
		},
	})
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service Run: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), passes
}

// noPublish is the publisher of a reconciler that has nothing to publish.
func noPublish(t *testing.T) reconciler.Publisher {
	return func(_ context.Context, job wire.Job, _ time.Duration) error {
		t.Errorf("published %s, want nothing published", job.ID())
		return errors.New("nothing is to be published")
	}
}

func nextPass(t *testing.T, passes <-chan pass) pass {
	t.Helper()
	select {
	case p := <-passes:
		return p
	case <-time.After(30 * time.Second):
		t.Fatal("no reconcile pass within 30s of a 1s schedule")
		return pass{}
	}
}

// The service repairs a stalled run on its schedule, counts the pass and
// the run in its metrics, and serves them with its health.
func TestServiceReconcilesOnSchedule(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID := tb.chainMissingB()
	tb.age(runID)
	reg := prometheus.NewRegistry()
	url, passes := startService(t, tb.newReconciler(nil), reg)

	if code, body := testenv.HTTPGet(t, url+"/health/liveness"); code != http.StatusOK || body != "ALIVE" {
		t.Errorf("liveness %d %q, want 200 ALIVE", code, body)
	}
	if p := nextPass(t, passes); p.err != nil || p.st.ReconciledRuns != 1 {
		t.Fatalf("first pass %+v, %v; want the stalled run reconciled", p.st, p.err)
	}
	assertJobs(t, "republished by the service", tb.takeQueued(), job(runID, "chain", "b", 1))
	if code, body := testenv.HTTPGet(t, url+"/health/readiness"); code != http.StatusOK || body != "READY" {
		t.Errorf("readiness %d %q, want 200 READY", code, body)
	}
	_, metrics := testenv.HTTPGet(t, url+"/metrics")
	for _, want := range []string{`stepflow_reconcile_passes_total{outcome="ok"}`, `stepflow_reconcile_runs_total{result="reconciled"} 1`, `stepflow_reconcile_duration_seconds_count`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, metrics)
		}
	}
	if r := tb.run(runID); r.Status != workflow.RunRunning || time.Since(r.UpdatedAt) > time.Minute {
		t.Errorf("run %s updated at %s, want running and touched by the repair", r.Status, r.UpdatedAt)
	}
}

// A pass that fails makes the service not ready and is counted as an
// error; the next pass that succeeds makes it ready again.
func TestServiceReadinessFollowsThePasses(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t, 2)
	tables := testenv.PrefixedTables(testenv.TablePrefix()) // not migrated yet: passes fail
	st, err := store.New(pool, tables)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := reconciler.New(reconciler.Options{Store: st, Publish: noPublish(t), Threshold: staleThreshold,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	url, passes := startService(t, rec, reg)

	if p := nextPass(t, passes); p.err == nil {
		t.Fatalf("pass over missing tables succeeded: %+v", p.st)
	}
	if code, _ := testenv.HTTPGet(t, url+"/health/readiness"); code != http.StatusServiceUnavailable {
		t.Errorf("readiness after a failed pass: %d, want 503", code)
	}
	testenv.MigrateTables(t, pool, tables)
	// A pass that began before the tables were there may still fail.
	for nextPass(t, passes).err != nil {
	}
	if code, body := testenv.HTTPGet(t, url+"/health/readiness"); code != http.StatusOK || body != "READY" {
		t.Errorf("readiness after a good pass: %d %q, want 200 READY", code, body)
	}
	if _, metrics := testenv.HTTPGet(t, url+"/metrics"); !strings.Contains(metrics, `stepflow_reconcile_passes_total{outcome="error"}`) {
		t.Errorf("/metrics counts no failed pass:\n%s", metrics)
	}
}

// A schedule cron does not parse is refused, by ValidateSchedule and by
// NewService alike.
func TestServiceRefusesABadSchedule(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"@every 30s", "*/1 * * * *", "@hourly"} {
		if err := reconciler.ValidateSchedule(spec); err != nil {
			t.Errorf("ValidateSchedule(%q): %v", spec, err)
		}
	}
	rec, err := reconciler.New(reconciler.Options{Store: &store.Store{}, Publish: noPublish(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{"soon", "* * *", "@every fortnight"} {
		if err := reconciler.ValidateSchedule(spec); err == nil {
			t.Errorf("ValidateSchedule(%q) accepted it", spec)
		}
		if _, err := reconciler.NewService(rec, reconciler.ServiceOptions{Schedule: spec}); err == nil || !strings.Contains(err.Error(), spec) {
			t.Errorf("NewService with schedule %q: %v, want an error naming it", spec, err)
		}
	}
}
