package e2e

// What the queue can do to jobs: poison messages, duplicates, concurrent
// deliveries of one job.

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

// Poison messages end in the DLQ at once, with a 4xx code and a reason
// naming the problem, while the other runs on the queue complete.
func TestPoisonMessagesAreDeadLettered(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	// A run that stays running (its gate is closed) for the unknown-node job.
	gated := tb.start(blueprint(t, chainWithGate), nil)
	g := tb.waitStarted(gated, "hold", 10*time.Second)
	// A run row without a blueprint snapshot, as the Flowcraft adapter
	// writes it, for a blueprint nobody registered.
	orphan := uuid.NewString()
	if _, err := tb.pool.Exec(context.Background(), `INSERT INTO `+tb.tables.Quoted().Statuses+` (run_id, status, status_data, updated_at) VALUES ($1, 'running', NULL, now())`, orphan); err != nil {
		t.Fatal(err)
	}
	missing := uuid.NewString()

	jobJSON := func(run, bp, node string) []byte {
		b, _ := json.Marshal(map[string]string{"runId": run, "blueprintId": bp, "nodeId": node})
		return b
	}
	poison := []struct {
		name   string
		body   []byte
		code   string
		reason []string // substrings of x-error-reason
	}{
		{"malformed", []byte(`{"runId": "r1", this is not JSON`), "400", []string{"not a job JSON object"}},
		{"not a job", []byte(`{"runId":"r1","nodeId":"a"}`), "400", []string{"blueprintId is required"}},
		{"unknown blueprint", jobJSON(orphan, "no-such-blueprint", "start"), "422", []string{`unknown blueprint "no-such-blueprint"`, orphan}},
		{"unknown node", jobJSON(gated, "gated", "ghost"), "422", []string{`has no node "ghost"`}},
		{"unknown run", jobJSON(missing, "gated", "a"), "422", []string{missing, "does not exist"}},
	}
	for _, p := range poison {
		tb.publishRaw(amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: p.body})
	}
	healthy := tb.start(testenv.Example(t, "chain10"), map[string]any{"ok": true})

	dead := tb.deadLetters(len(poison), 20*time.Second)
	byBody := map[string]amqp.Delivery{}
	for _, d := range dead {
		byBody[string(d.Body)] = d
	}
	for _, p := range poison {
		d, ok := byBody[string(p.body)]
		if !ok {
			t.Errorf("%s: not on the DLQ (body kept as published?)", p.name)
			continue
		}
		if code := headerString(d.Headers, jobqueue.HeaderErrorCode); code != p.code {
			t.Errorf("%s: x-error-code %q, want %q", p.name, code, p.code)
		}
		reason := headerString(d.Headers, jobqueue.HeaderErrorReason)
		for _, want := range p.reason {
			if !strings.Contains(reason, want) {
				t.Errorf("%s: x-error-reason %q does not name %q", p.name, reason, want)
			}
		}
		if n := headerString(d.Headers, jobqueue.HeaderAttempts); n != "1" {
			t.Errorf("%s: x-attempts %s, want 1 (a poison message is not retried)", p.name, n)
		}
	}

	if res := tb.wait(healthy, 20*time.Second); res.Status != workflow.RunCompleted {
		t.Errorf("a healthy run next to the poison: status %s, errors %v", res.Status, res.Errors)
	}
	g.open()
	if res := tb.wait(gated, 20*time.Second); res.Status != workflow.RunCompleted {
		t.Errorf("the run the unknown-node job named: status %s, errors %v", res.Status, res.Errors)
	}
	if n := tb.queueDepth(jobqueue.DeadLetterQueue(tb.queue)); n != 0 {
		t.Errorf("%d more message(s) on the DLQ", n)
	}
}

// chainCounted is a → b (a gate) → c.
const chainCounted = `{"id":"dup","metadata":{"version":"1"},
  "nodes":[
    {"id":"a","uses":"transform","params":{"expression":"{'n': input.n + 1}"}},
    {"id":"b","uses":"gate"},
    {"id":"c","uses":"transform","params":{"expression":"{'n': input.n * 10}"}}],
  "edges":[{"source":"a","target":"b"},{"source":"b","target":"c"}]}`

// Copies of a start job and of a mid-run job (published by hand, with the
// same message id) run no node twice and leave the result unchanged.
func TestDuplicateJobs(t *testing.T) {
	t.Parallel()
	// A copy refused while its original runs is retried by the bridge;
	// give it attempts enough to outlast the original under -race.
	tb := setup(t, withBridge(func(c *bridge.Config) { c.MaxAttempts = 20 }))
	bp := blueprint(t, chainCounted)

	runID := tb.start(bp, map[string]any{"n": 1})
	jobA := jobqueue.Job{RunID: runID, BlueprintID: "dup", NodeID: "a", Attempt: 1}
	jobB := jobqueue.Job{RunID: runID, BlueprintID: "dup", NodeID: "b", Attempt: 1}
	tb.publishJob(jobA) // a copy of the start job, at once

	g := tb.waitStarted(runID, "b", 10*time.Second)
	tb.publishJob(jobB) // a copy of the running step's job
	tb.publishJob(jobA) // and of the finished start step's
	testenv.Eventually(t, 10*time.Second, "the copy of b's job to be refused while b runs (409)", func() bool {
		for _, r := range tb.http.of(runID, "b") {
			if r.Status == 409 {
				return true
			}
		}
		return false
	})
	g.open()
	res := tb.wait(runID, 20*time.Second)

	// Copies after the run completed are answered without running anything.
	before := len(tb.http.of(runID, "b"))
	tb.publishJob(jobB)
	tb.publishJob(jobqueue.Job{RunID: runID, BlueprintID: "dup", NodeID: "c", Attempt: 1})
	testenv.Eventually(t, 10*time.Second, "the late copies to be answered", func() bool {
		return len(tb.http.of(runID, "b")) > before && len(tb.http.of(runID, "c")) >= 2
	})

	if res.Status != workflow.RunCompleted {
		t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"n":20}`))
	assertSteps(t, res, map[string]wantStep{"a": {workflow.StepSucceeded, 1}, "b": {workflow.StepSucceeded, 1}, "c": {workflow.StepSucceeded, 1}})
	for _, id := range []string{"a", "b", "c"} {
		if n := tb.nodes.count(runID, id); n != 1 {
			t.Errorf("node %s ran %d times, want 1", id, n)
		}
	}
	after, err := tb.client.Result(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	testenv.AssertJSON(t, "final context after the late copies", after.Context, json.RawMessage(`{"n":1,"_outputs.a":{"n":2},"_outputs.b":{"n":2},"_outputs.c":{"n":20},"a":{"n":2},"b":{"n":2},"c":{"n":20}}`))
	if w := tb.finalWrites(runID); len(w) != 1 || w[0] != "completed" {
		t.Errorf("final status writes %v, want [completed]", w)
	}
	if n := tb.queueDepth(jobqueue.DeadLetterQueue(tb.queue)); n != 0 {
		t.Errorf("%d duplicate(s) dead-lettered", n)
	}
}

// Several deliveries of one job at the same time never run its node
// concurrently: while o is held running, its copies are refused (409),
// and o runs once.
func TestConcurrentDeliveriesNeverOverlap(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := blueprint(t, `{"id":"overlap","metadata":{"version":"1"},
	  "nodes":[{"id":"o","uses":"gate"},{"id":"end","uses":"noop"}],
	  "edges":[{"source":"o","target":"end"}]}`)

	runID := tb.start(bp, map[string]any{"v": 1})
	g := tb.waitStarted(runID, "o", 20*time.Second)
	job := jobqueue.Job{RunID: runID, BlueprintID: "overlap", NodeID: "o", Attempt: 1}
	for range 4 {
		tb.publishJob(job)
	}
	testenv.Eventually(t, 20*time.Second, "a copy of o's job to be refused while o runs", func() bool {
		for _, r := range tb.http.of(runID, "o") {
			if r.Status == 409 {
				return true
			}
		}
		return false
	})
	g.open()
	res := tb.wait(runID, 20*time.Second)

	if res.Status != workflow.RunCompleted {
		t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"v":1}`))
	if n := tb.nodes.count(runID, "o"); n != 1 {
		t.Errorf("o ran %d times, want 1", n)
	}
}

// A copy of a job that arrives while the original delivery runs a long
// node is refused (409) until the bridge gives up and dead-letters it.
// That copy is a duplicate, not a failure of the run: recording it
// (reconciler.IngestDeadLetters) must not fail a run whose original
// delivery is still running the step.
func TestDeadLetteredDuplicateDoesNotFailRun(t *testing.T) {
	t.Parallel()
	tb := setup(t, withBridge(func(c *bridge.Config) { c.MaxAttempts = 2 }))
	bp := blueprint(t, chainCounted)

	runID := tb.start(bp, map[string]any{"n": 1})
	g := tb.waitStarted(runID, "b", 10*time.Second)
	tb.publishJob(jobqueue.Job{RunID: runID, BlueprintID: "dup", NodeID: "b", Attempt: 1})
	testenv.Eventually(t, 10*time.Second, "the copy of b's job to be dead-lettered", func() bool {
		return tb.queueDepth(jobqueue.DeadLetterQueue(tb.queue)) == 1
	})

	rec, err := reconciler.New(reconciler.Options{
		Store:   tb.store,
		Publish: tb.pub.Publish,
		Channel: func() (*amqp.Channel, error) { return tb.conn.Channel() },
		Queue:   tb.queue,
		Logger:  tb.logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	recorded, failed, err := rec.IngestDeadLetters(context.Background())
	if err != nil {
		t.Fatalf("IngestDeadLetters: %v", err)
	}
	if recorded != 1 {
		t.Errorf("recorded %d dead letters, want 1", recorded)
	}
	g.open()
	res := tb.wait(runID, 20*time.Second)
	if res.Status != workflow.RunCompleted || failed != 0 {
		t.Errorf("run %s after its step's duplicate was dead-lettered (409, lease held by the original delivery): status %s, errors %+v, runs failed by ingestion %d; want completed with output {\"n\":20}",
			runID, res.Status, res.Errors, failed)
	}
	if n := tb.nodes.count(runID, "b"); n != 1 {
		t.Errorf("b ran %d times, want 1", n)
	}
}
