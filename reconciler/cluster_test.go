package reconciler_test

import (
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/reconciler"
)

// TestReconcileSkipsLeasedSteps with the leases in a three-node Redis
// Cluster the test starts: a leased pending step is left alone, and
// republished once its lease is gone.
func TestReconcileSkipsLeasedStepsOnRedisCluster(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	cluster := testenv.RedisAt(t, testenv.RedisCluster(t))
	onCluster := func(o *reconciler.Options) { o.Redis = cluster }
	runID := tb.chainMissingB()
	aged := tb.age(runID)
	lease := wire.LeaseKey(tb.redisPrefix, runID, "b")
	if err := cluster.Set(tb.ctx, lease, "another-delivery", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.DeleteRedisKeys(t, cluster, tb.redisPrefix) })

	st := tb.reconcile(tb.newReconciler(nil, onCluster))
	if want := (reconciler.Stats{StalledRuns: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	tb.assertNothingQueued()
	if r := tb.run(runID); !r.UpdatedAt.Equal(aged) {
		t.Errorf("updated_at %s, want untouched %s", r.UpdatedAt, aged)
	}

	if err := cluster.Del(tb.ctx, lease).Err(); err != nil {
		t.Fatal(err)
	}
	st = tb.reconcile(tb.newReconciler(nil, onCluster))
	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("after the lease: stats %+v, want %+v", st, want)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, job(runID, "chain", "b", 1))
	tb.deliverAll(republished...)
	tb.assertCompleted(runID, chainOutputs)
}
