package store_test

// A wide graph of joins run on the real services (the in-process stack:
// step function, bridge and reconciler over PostgreSQL, Redis and
// RabbitMQ). Every commit of a join locks its run's status row and reads
// the routing its siblings committed, so the commits of one run queue on
// that row: this test holds the stack to finishing such a run promptly,
// each node running once and each step committed once.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

// joinGrid is the blueprint of console/speed_test.go's layered(ranks,
// width, true) with nodes of type uses: width chains side by side, each
// node also feeding the next rank's next chain, so that every node past
// the first rank is an "all" join of two. preds names each join's two
// predecessors.
func joinGrid(ranks, width int, uses string) (src string, preds map[string][]string) {
	id := func(r, i int) string { return fmt.Sprintf("n%02d_%02d", r, i) }
	var nodes, edges []string
	preds = map[string][]string{}
	for r := range ranks {
		for i := range width {
			nodes = append(nodes, fmt.Sprintf(`{"id": %q, "uses": %q}`, id(r, i), uses))
			if r+1 < ranks {
				for _, j := range []int{i, (i + 1) % width} {
					edges = append(edges, fmt.Sprintf(`{"source": %q, "target": %q}`, id(r, i), id(r+1, j)))
					preds[id(r+1, j)] = append(preds[id(r+1, j)], id(r, i))
				}
			}
		}
	}
	return `{"id": "join-grid", "nodes": [` + strings.Join(nodes, ",") + `], "edges": [` + strings.Join(edges, ",") + `]}`, preds
}

// TestWideJoinGraphCompletesOnTheStack runs 25 ranks × 20 nodes, 480 of
// them joins of two, on the stack. Its nodes output their own id, so the
// values stay small whatever the rank (a noop there echoes its input, and
// an "all" join's input holds both predecessors' values: each rank's
// values are twice the size of the last, which no engine can carry to
// rank 24; see docs/architecture.md). The run must complete within the
// bound, every node must run exactly once with both its predecessors'
// outputs as its input, every step must be committed once (attempt 1),
// and nothing may be dead-lettered.
func TestWideJoinGraphCompletesOnTheStack(t *testing.T) {
	const ranks, width = 25, 20
	// Measured at about 1.5 s on two loaded cores; a regression that makes
	// a commit's cost grow with the rank (or stalls commits into the
	// bridge's timeout and its retries into dead letters) takes minutes.
	const within = 60 * time.Second
	src, preds := joinGrid(ranks, width, "mark")

	var mu sync.Mutex
	runs := map[string]int{}
	var wrongInputs []string
	reg := workflow.NewRegistry()
	reg.Register("mark", func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		var bad string
		if want := preds[in.NodeID]; want != nil {
			// An "all" join: source id → that source's output (its id).
			got, _ := in.Input.(map[string]any)
			wantInput := map[string]any{want[0]: want[0], want[1]: want[1]}
			if !maps.Equal(got, wantInput) {
				bad = fmt.Sprintf("%s got %v, want %v", in.NodeID, in.Input, wantInput)
			}
		}
		mu.Lock()
		runs[in.NodeID]++
		if bad != "" {
			wrongInputs = append(wrongInputs, bad)
		}
		mu.Unlock()
		return workflow.NodeResult{Output: in.NodeID}, nil
	})

	s := inprocess.ForTest(t, inprocess.Options{Registry: reg})
	ctx, cancel := context.WithTimeout(context.Background(), within+30*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{PostgresURL: s.PostgresURL, AMQPURL: s.AMQPURL, Queue: s.Queue, Tables: s.Tables, Registry: reg})
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(c.Close)
	bp, err := workflow.Decode([]byte(src))
	if err != nil {
		t.Fatalf("decode the blueprint: %v", err)
	}

	started := time.Now()
	id, err := c.Start(ctx, bp, nil, client.StartOptions{RunID: "join-grid"})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	waitCtx, waitCancel := context.WithTimeout(ctx, within)
	res, err := c.Wait(waitCtx, id)
	waitCancel()
	took := time.Since(started)
	st, stErr := store.New(testenv.Pool(t, 2), s.Tables)
	if stErr != nil {
		t.Fatal(stErr)
	}
	if err != nil {
		t.Fatalf("the run of %d×%d joined nodes did not finish within %v: %v\n%s", ranks, width, within, err, rankProgress(ctx, t, st, id))
	}
	t.Logf("the run of %d×%d joined nodes finished in %v", ranks, width, took.Round(time.Millisecond))
	if res.Status != workflow.RunCompleted {
		t.Fatalf("run %s: %s (%v), want completed", id, res.Status, res.Errors)
	}

	steps, err := st.Steps(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != ranks*width {
		t.Errorf("%d step rows, want %d", len(steps), ranks*width)
	}
	for _, step := range steps {
		if step.State != workflow.StepSucceeded || step.Attempts != 1 {
			t.Errorf("step %s: %s at attempt %d, want succeeded at attempt 1", step.NodeID, step.State, step.Attempts)
		}
	}
	mu.Lock()
	for r := range ranks {
		for i := range width {
			if n := runs[fmt.Sprintf("n%02d_%02d", r, i)]; n != 1 {
				t.Errorf("node n%02d_%02d ran %d times, want once", r, i, n)
			}
		}
	}
	for _, w := range wrongInputs {
		t.Errorf("join input: %s", w)
	}
	mu.Unlock()

	// A dead letter is recorded by the reconciler, or still in its queue.
	dls, err := st.DeadLetters(ctx, store.DeadLetterFilter{RunID: id})
	if err != nil {
		t.Fatal(err)
	}
	for _, dl := range dls {
		t.Errorf("dead letter for %s: %s %s", dl.NodeID, dl.Code, dl.Reason)
	}
	if n := testenv.QueueDepth(t, testenv.RabbitMQ(t), jobqueue.DeadLetterQueue(s.Queue)); n != 0 {
		t.Errorf("%d messages in the dead-letter queue, want none", n)
	}
}

// rankProgress says, rank by rank, how many steps of the run succeeded:
// where a run that did not finish got to.
func rankProgress(ctx context.Context, t *testing.T, st *store.Store, runID string) string {
	steps, err := st.Steps(ctx, runID)
	if err != nil {
		return fmt.Sprintf("(steps: %v)", err)
	}
	done := map[string]int{}
	for _, s := range steps {
		if s.State == workflow.StepSucceeded {
			done[s.NodeID[:3]]++
		}
	}
	var out []string
	for _, r := range slices.Sorted(maps.Keys(done)) {
		out = append(out, fmt.Sprintf("rank %s: %d succeeded", r[1:], done[r]))
	}
	return strings.Join(out, "\n")
}
