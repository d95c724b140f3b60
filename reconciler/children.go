package reconciler

import (
	"context"
	"fmt"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/wire"
)

// childrenCheck is what a claimed run's steps awaiting child runs
// (subflows) tell the pass.
type childrenCheck struct {
	continued int // continuation jobs published: the steps' children had finished
	awaiting  int // steps whose child run has not finished
	// onlyChildren: the run has no pending step besides those awaiting a
	// child, so there is nothing else to republish and nothing to resync.
	onlyChildren bool
}

// waiting reports whether the run only waits for child runs that are
// still running: it is not stalled, and the pass leaves it alone.
func (c childrenCheck) waiting() bool { return c.onlyChildren && c.continued == 0 && c.awaiting > 0 }

// children repairs the continuation of a parent run (subflows): a step
// awaiting a child run that has finished is continued by the child's
// finishing commit, through a job its answer carries; when that job was
// lost (the process died between the child's commit and the publish), the
// step's job is published again here. The step's commit is the
// exactly-once guard: a duplicate continuation finds the step finished. A
// step whose child still runs needs nothing: the child is a run of its
// own, which the pass repairs if it stalls.
func (r *Reconciler) children(ctx context.Context, run store.StalledRun) (childrenCheck, error) {
	var c childrenCheck
	steps, err := r.o.Store.AwaitingChildren(ctx, run.RunID)
	if err != nil || len(steps) == 0 {
		return c, err
	}
	for _, a := range steps {
		if !a.ChildFound || !a.ChildStatus.Final() {
			c.awaiting++
			continue
		}
		if r.o.Redis != nil {
			n, err := r.o.Redis.Exists(ctx, wire.LeaseKey(r.o.RedisPrefix, run.RunID, a.NodeID)).Result()
			if err == nil && n > 0 {
				continue // being continued right now
			}
		}
		job := jobqueue.Job{RunID: run.RunID, BlueprintID: run.BlueprintID, NodeID: a.NodeID, Attempt: a.Attempt}
		if err := r.o.Publish(ctx, job, 0); err != nil {
			return c, fmt.Errorf("republish the continuation %s: %w", job.ID(), err)
		}
		c.continued++
		r.o.Logger.Info("republished the continuation of a step whose child run finished", "run_id", run.RunID, "node_id", a.NodeID,
			"attempt", a.Attempt, "child_run_id", a.ChildRunID, "child_status", a.ChildStatus)
	}
	pend, err := r.o.Store.PendingSteps(ctx, nil, run.RunID)
	if err != nil {
		return c, err
	}
	c.onlyChildren = len(pend) == 0
	return c, nil
}
