package e2e

// Node failures: retries with backoff, fallbacks, exhausted attempts,
// timeouts.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// retry.json: `unstable` fails attempts 1 and 2 and succeeds on its third
// and last; each retry waits at least the jittered backoff.
func TestRetryThenSuccess(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "retry")

	runID := tb.start(bp, map[string]any{"id": 7})
	res := tb.wait(runID, 20*time.Second)

	if res.Status != workflow.RunCompleted {
		t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"id":7}`))
	assertSteps(t, res, map[string]wantStep{
		"start": {workflow.StepSucceeded, 1}, "unstable": {workflow.StepSucceeded, 3}, "end": {workflow.StepSucceeded, 1},
	})
	calls := tb.nodes.of(runID, "unstable")
	if len(calls) != 3 {
		t.Fatalf("unstable called %d times, want 3", len(calls))
	}
	for i, c := range calls {
		if c.Attempt != i+1 {
			t.Errorf("call %d had attempt %d, want %d", i+1, c.Attempt, i+1)
		}
		var want string
		if i < 2 {
			want = fmt.Sprintf("flaky: attempt %d of 2 planned failures", i+1)
		}
		if got := errString(c.Err); got != want {
			t.Errorf("attempt %d: error %q, want %q", i+1, got, want)
		}
	}
	// retryDelay 20 ms with equal jitter: attempt 2 waits 10–20 ms, attempt
	// 3 waits 20–40 ms. The bridge may deliver a delayed job up to 5 ms
	// early (its early tolerance), never more.
	const early = 5 * time.Millisecond
	for i, min := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond} {
		if gap := calls[i+1].Start.Sub(calls[i].End); gap < min-early {
			t.Errorf("attempt %d started %s after attempt %d ended, want at least %s", i+2, gap, i+1, min)
		}
	}
	if total := calls[2].Start.Sub(calls[0].End); total < 30*time.Millisecond-early {
		t.Errorf("attempts 1 → 3 took %s, want at least the backoff, 30 ms", total)
	}
	if n := tb.nodes.count(runID, "end"); n != 1 {
		t.Errorf("end ran %d times, want 1", n)
	}
}

// fallback.json: `primary` fails both attempts, `backup` runs in its place
// and its output stands in for primary's.
func TestRetriesExhaustedFallback(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "fallback")

	runID := tb.start(bp, map[string]any{"order": 1})
	res := tb.wait(runID, 20*time.Second)

	if res.Status != workflow.RunCompleted {
		t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"recoveredBy":"backup"}`))
	assertSteps(t, res, map[string]wantStep{
		"start": {workflow.StepSucceeded, 1}, "primary": {workflow.StepRecovered, 2},
		"backup": {workflow.StepSucceeded, 1}, "end": {workflow.StepSucceeded, 1},
	})
	testenv.AssertJSON(t, "final context", res.Context, json.RawMessage(`{"order":1,
		"_outputs.start":{"order":1},
		"_outputs.primary":{"recoveredBy":"backup"},
		"_outputs.backup":{"recoveredBy":"backup"},
		"_outputs.end":{"recoveredBy":"backup"},
		"start":{"order":1},"primary":{"recoveredBy":"backup"},"backup":{"recoveredBy":"backup"},"end":{"recoveredBy":"backup"}}`))
	for node, want := range map[string]int{"start": 1, "primary": 2, "backup": 1, "end": 1} {
		if n := tb.nodes.count(runID, node); n != want {
			t.Errorf("node %s ran %d times, want %d", node, n, want)
		}
	}
	for _, c := range tb.nodes.of(runID, "primary") {
		if got := errString(c.Err); got != "primary service is down" {
			t.Errorf("primary attempt %d: error %q, want the node's message", c.Attempt, got)
		}
	}
	// The fallback gets the failed node's input.
	if calls := tb.nodes.of(runID, "backup"); len(calls) == 1 {
		testenv.AssertJSON(t, "backup's input", calls[0].Input, json.RawMessage(`{"order":1}`))
	}
	if len(res.Errors) != 0 {
		t.Errorf("a recovered run reports errors: %v", res.Errors)
	}
}

// Attempts exhausted without a fallback: the run fails with the node's own
// message, nothing after the node runs, and the final status is written
// once.
func TestRetriesExhaustedRunFails(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	const msg = "card declined: insufficient funds (code 51)"
	bp := blueprint(t, `{"id":"charge","metadata":{"version":"1"},
	  "nodes":[
	    {"id":"start","uses":"noop"},
	    {"id":"charge","uses":"fail","params":{"message":"`+msg+`"},"config":{"maxRetries":2,"retryDelay":10}},
	    {"id":"ship","uses":"noop"}],
	  "edges":[{"source":"start","target":"charge"},{"source":"charge","target":"ship"}]}`)

	runID := tb.start(bp, map[string]any{"amount": 12})
	res := tb.wait(runID, 20*time.Second)

	if res.Status != workflow.RunFailed {
		t.Fatalf("status %s, want failed", res.Status)
	}
	if len(res.Errors) != 1 || res.Errors[0].NodeID != "charge" || res.Errors[0].Message != msg {
		t.Errorf("errors %+v, want [{charge %q}]", res.Errors, msg)
	}
	assertSteps(t, res, map[string]wantStep{"start": {workflow.StepSucceeded, 1}, "charge": {workflow.StepFailed, 2}})
	for _, s := range res.Steps {
		if s.NodeID == "charge" && s.Error != msg {
			t.Errorf("charge's step error %q, want %q", s.Error, msg)
		}
	}
	if n := tb.nodes.count(runID, "charge"); n != 2 {
		t.Errorf("charge ran %d times, want 2", n)
	}
	if n := tb.nodes.count(runID, "ship"); n != 0 {
		t.Errorf("ship ran %d times after the run failed", n)
	}
	if w := tb.finalWrites(runID); len(w) != 1 || w[0] != "failed" {
		t.Errorf("final status writes %v, want [failed]", w)
	}
}

// A node that runs past config.timeout fails with "timed out", at the
// timeout, not when the node would have finished.
func TestNodeTimeout(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := blueprint(t, `{"id":"timeout","metadata":{"version":"1"},
	  "nodes":[
	    {"id":"start","uses":"noop"},
	    {"id":"slowpoke","uses":"slow","params":{"ms":3000},"config":{"timeout":150}},
	    {"id":"end","uses":"noop"}],
	  "edges":[{"source":"start","target":"slowpoke"},{"source":"slowpoke","target":"end"}]}`)

	began := time.Now()
	runID := tb.start(bp, nil)
	res := tb.wait(runID, 20*time.Second)
	took := time.Since(began)

	if res.Status != workflow.RunFailed {
		t.Fatalf("status %s, want failed", res.Status)
	}
	if len(res.Errors) != 1 || res.Errors[0].NodeID != "slowpoke" || !strings.Contains(res.Errors[0].Message, "timed out") {
		t.Fatalf("errors %+v, want slowpoke's \"timed out\"", res.Errors)
	}
	if got, want := res.Errors[0].Message, "node slowpoke timed out after 150ms"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
	assertSteps(t, res, map[string]wantStep{"start": {workflow.StepSucceeded, 1}, "slowpoke": {workflow.StepFailed, 1}})
	calls := tb.nodes.of(runID, "slowpoke")
	if len(calls) != 1 {
		t.Fatalf("slowpoke called %d times, want 1", len(calls))
	}
	// The 150 ms start when the attempt's context is made, a little before
	// the node itself starts (more so under -race): the node sees a bit less.
	if d := calls[0].End.Sub(calls[0].Start); d < 100*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("slowpoke ran %s, want it stopped at its 150 ms timeout", d)
	}
	if took > 3*time.Second {
		t.Errorf("the run took %s: the node was not stopped at its timeout", took)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
