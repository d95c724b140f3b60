package function_test

// Whole runs through the real bridge and function with their leases in one
// Redis and in a three-node Redis Cluster the test starts: the same runs,
// the same results. Every job is published twice, so leases are contended
// on every step.

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

func TestRunsOnRedisCluster(t *testing.T) {
	t.Parallel()
	backends := []struct{ name, url string }{
		{"single", testenv.RedisURL()},
		{"cluster", testenv.RedisCluster(t)},
	}
	fanout, retry := testenv.Example(t, "fanout"), testenv.Example(t, "retry")
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			s := inprocess.ForTest(t, inprocess.Options{
				RedisURL: be.url,
				Registry: nodes.Registry(),
				Bridge: func(c *bridge.Config) {
					c.PublishCopies = 2
					// A retry's job can come back before the lease of the
					// attempt before it is given back (that is done after
					// the answer), and both copies then wait with 409s:
					// more attempts than the stack's five, as the fault
					// suite has, so a loaded machine does not dead-letter
					// them.
					c.MaxAttempts = 40
				},
			})
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cl, err := client.New(ctx, client.Config{PostgresURL: s.PostgresURL, AMQPURL: s.AMQPURL, Queue: s.Queue, Tables: s.Tables})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cl.Close)

			type run struct {
				bp *workflow.Blueprint
				id string
			}
			var runs []run
			for i := range 24 {
				bp := fanout
				if i%4 == 3 {
					bp = retry
				}
				runs = append(runs, run{bp, fmt.Sprintf("%s-%s-%02d", be.name, testenv.RandomHex(3), i)})
			}
			var wg sync.WaitGroup
			for _, r := range runs {
				wg.Go(func() {
					want, err := workflow.Run(ctx, r.bp, nodes.Registry(), map[string]any{"run": r.id}, workflow.RunOptions{RunID: r.id})
					if err != nil {
						t.Errorf("oracle %s: %v", r.id, err)
						return
					}
					if _, err := cl.Start(ctx, r.bp, map[string]any{"run": r.id}, client.StartOptions{RunID: r.id}); err != nil {
						t.Errorf("start %s: %v", r.id, err)
						return
					}
					got, err := cl.Wait(ctx, r.id)
					if err != nil {
						t.Errorf("wait %s: %v", r.id, err)
						return
					}
					if got.Status != workflow.RunCompleted || !reflect.DeepEqual(stepStates(got), stepStates(want)) {
						t.Errorf("run %s (%s) ended %s with steps %v; the local runner: %s, %v", r.id, r.bp.ID, got.Status, stepStates(got), want.Status, stepStates(want))
					}
				})
			}
			wg.Wait()

			// Every lease was given back: none outlives its step.
			rdb := testenv.RedisAt(t, be.url)
			deadline := time.Now().Add(10 * time.Second)
			for {
				keys, err := testenv.RedisKeys(ctx, rdb, s.RedisPrefix)
				if err == nil && len(keys) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("leases left after every run ended: %v (%v)", keys, err)
				}
				<-time.After(20 * time.Millisecond) // poll interval
			}
		})
	}
}

// stepStates is a run's steps as node → state/attempts.
func stepStates(r *workflow.RunResult) map[string]string {
	out := map[string]string{}
	for _, s := range r.Steps {
		out[s.NodeID] = fmt.Sprintf("%s/%d", s.State, s.Attempts)
	}
	return out
}
