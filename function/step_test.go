package function_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/stepflow/stepflow/function"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

func job(runID, blueprintID, nodeID string, attempt int) wire.Job {
	return wire.Job{RunID: runID, BlueprintID: blueprintID, NodeID: nodeID, Attempt: attempt}
}

// assertTargets checks the reply's jobs as node:attempt, in order.
func assertTargets(t *testing.T, what string, got []wire.NextJob, want ...string) {
	t.Helper()
	if g := targets(got); !slices.Equal(g, want) {
		t.Fatalf("%s: reply jobs %q, want %q", what, g, want)
	}
}

// assertTargetSet is assertTargets, order aside.
func assertTargetSet(t *testing.T, what string, got []wire.NextJob, want ...string) {
	t.Helper()
	g := targets(got)
	slices.Sort(g)
	slices.Sort(want)
	if !slices.Equal(g, want) {
		t.Fatalf("%s: reply jobs %q, want %q", what, g, want)
	}
}

// assertRejected checks an error reply's status and that its message names
// the problem.
func assertRejected(t *testing.T, what string, err error, code int, mention string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted, want %d", what, code)
	}
	if got := status(err); got != code {
		t.Fatalf("%s: status %d (%q), want %d", what, got, err.Error(), code)
	}
	if !strings.Contains(err.Error(), mention) {
		t.Errorf("%s: message %q does not mention %q", what, err.Error(), mention)
	}
}

const pairBlueprint = `{"id": "pair", "nodes": [
  {"id": "first", "uses": "probe"},
  {"id": "second", "uses": "probe"}],
 "edges": [{"source": "first", "target": "second"}]}`

func TestHandleRejectsMalformedEvents(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	good := job("run-x", "pair", "first", 1)
	withData := func(data []byte) event.Event {
		e := jobEvent(good)
		if err := e.SetData(event.ApplicationJSON, data); err != nil {
			t.Fatal(err)
		}
		return e
	}
	wrongType := jobEvent(good)
	wrongType.SetType("com.example.something")

	for _, tc := range []struct {
		name    string
		e       event.Event
		mention string
	}{
		{"wrong event type", wrongType, `want "dev.stepflow.job.v1"`},
		{"body not JSON", withData([]byte("runId=1")), "not a job JSON object"},
		{"body a JSON array", withData([]byte(`[1, 2]`)), "not a job JSON object"},
		{"empty body", withData(nil), "not a job JSON object"},
		{"missing fields", withData([]byte(`{"nodeId": "first"}`)), "runId is required"},
		{"negative attempt", withData([]byte(`{"runId": "r", "blueprintId": "pair", "nodeId": "first", "attempt": -2}`)), "attempt must be positive"},
		{"attempt not a number", withData([]byte(`{"runId": "r", "blueprintId": "pair", "nodeId": "first", "attempt": "2"}`)), "attempt"},
		{"body too large", withData([]byte(`{"runId": "` + strings.Repeat("r", wire.MaxJobBytes) + `", "blueprintId": "pair", "nodeId": "first"}`)), "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tb.f.Handle(tb.ctx, tc.e)
			if resp != nil {
				t.Errorf("reply event %v for a malformed job", resp)
			}
			assertRejected(t, tc.name, err, http.StatusBadRequest, tc.mention)
		})
	}
	if keys, _ := tb.redisKeys(tb.ctx); len(keys) != 0 {
		t.Errorf("malformed jobs left Redis keys %q", keys)
	}
}

// A job whose ids PostgreSQL cannot store (a NUL byte) is malformed: it must
// be answered 400 (dead-lettered at once), not 503 (retried by the bridge
// until its attempts run out).
func TestHandleRejectsIDsPostgresCannotStore(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, err := tb.handle(nil, job("run\x00x", "pair", "first", 1))
	assertRejected(t, "NUL in runId", err, http.StatusBadRequest, "runId")
}

func TestHandleRejectsUnknownRunNodeAndBlueprint(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, _ := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)

	_, err := tb.handle(nil, job("no-such-run", "pair", "first", 1))
	assertRejected(t, "unknown run", err, http.StatusUnprocessableEntity, `run "no-such-run" does not exist`)

	_, err = tb.handle(nil, job(runID, "pair", "third", 1))
	assertRejected(t, "unknown node", err, http.StatusUnprocessableEntity, `has no node "third"`)

	// Started the Flowcraft way (no snapshot) with a blueprint this
	// function does not know.
	tb.exec(`INSERT INTO ` + tb.tables.Quoted().Contexts + ` (run_id, context_data) VALUES ('fc-ghost', '{"blueprintId": "ghost"}')`)
	tb.exec(`INSERT INTO ` + tb.tables.Quoted().Statuses + ` (run_id, status) VALUES ('fc-ghost', 'running')`)
	_, err = tb.handle(nil, job("fc-ghost", "ghost", "start", 1))
	assertRejected(t, "unknown blueprint", err, http.StatusUnprocessableEntity, `unknown blueprint "ghost"`)

	// A pinned snapshot that is gone.
	tb.exec(`UPDATE `+tb.tables.Quoted().Statuses+` SET blueprint_digest = 'sha256:gone' WHERE run_id = $1`, runID)
	_, err = tb.handle(nil, job(runID, "pair", "first", 1))
	assertRejected(t, "missing snapshot", err, http.StatusUnprocessableEntity, "sha256:gone")

	if n := tb.probes.count("first"); n != 0 {
		t.Errorf("probe ran %d times for rejected jobs", n)
	}
}

func TestHandleLeaseHeld(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)
	lease := wire.LeaseKey(tb.redisPrefix, runID, "first")
	if err := tb.rdb.Set(tb.ctx, lease, "other-delivery", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	_, err := tb.handle(nil, starts[0])

	assertRejected(t, "leased step", err, http.StatusConflict, "being run by another delivery")
	if n := tb.probes.count("first"); n != 0 {
		t.Errorf("node ran %d times under another delivery's lease", n)
	}
	if v, err := tb.rdb.Get(tb.ctx, lease).Result(); err != nil || v != "other-delivery" {
		t.Errorf("the other delivery's lease is now %q (%v), want untouched", v, err)
	}
	if s := tb.step(runID, "first"); s.State != workflow.StepReady || s.Attempts != 0 {
		t.Errorf("step changed under a held lease: %s after %d attempts", s.State, s.Attempts)
	}

	// Once the lease is gone the job runs, and its own lease is released.
	if err := tb.rdb.Del(tb.ctx, lease).Err(); err != nil {
		t.Fatal(err)
	}
	assertTargets(t, "after the lease", tb.mustHandle(starts[0]), "second:1")
	if keys, _ := tb.redisKeys(tb.ctx); len(keys) != 0 {
		t.Errorf("leases left behind: %q", keys)
	}

	// The step finished, but its lease is held again: a redelivery is
	// answered 200 at once (the holder re-emits), not 409 until the
	// holder lets go, and runs nothing.
	if err := tb.rdb.Set(tb.ctx, lease, "earlier-delivery", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	assertTargets(t, "finished step under a held lease", tb.mustHandle(starts[0]))
	if n := tb.probes.count("first"); n != 1 {
		t.Errorf("first ran %d times, want once", n)
	}
}

func TestHandleFinishedStepReemitsItsStoredRouting(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "route", "nodes": [
	  {"id": "route", "uses": "probe"},
	  {"id": "yes", "uses": "probe"},
	  {"id": "no", "uses": "probe"}],
	 "edges": [
	  {"source": "route", "target": "yes", "condition": "context.flag == true"},
	  {"source": "route", "target": "no", "condition": "context.flag != true"}]}`)
	runID, starts := tb.createRun(bp, map[string]any{"flag": true})

	first := tb.mustHandle(starts[0])
	assertTargets(t, "first delivery", first, "yes:1")
	if s := tb.step(runID, "no"); s == nil || s.State != workflow.StepSkipped {
		t.Fatalf("untaken no: %+v, want skipped", s)
	}
	// Another branch changes what the condition reads; a re-evaluation
	// would now take "no".
	tb.exec(`UPDATE `+tb.tables.Quoted().Contexts+` SET context_data = context_data || '{"flag": false}' WHERE run_id = $1`, runID)

	for _, attempt := range []int{1, 2} {
		dup := tb.mustHandle(job(runID, "route", "route", attempt))
		assertTargets(t, fmt.Sprintf("duplicate at attempt %d", attempt), dup, "yes:1")
	}
	if n := tb.probes.count("route"); n != 1 {
		t.Errorf("route ran %d times, want 1", n)
	}
	if s := tb.step(runID, "route"); s.State != workflow.StepSucceeded || s.Attempts != 1 || !slices.Equal(s.Taken, []string{"yes"}) {
		t.Errorf("route step: %s, %d attempts, taken %q", s.State, s.Attempts, s.Taken)
	}
	tb.deliverAll(nil, first[0].Job)
	tb.assertCompleted(runID, nil)
	if n := tb.probes.count("no"); n != 0 {
		t.Errorf("untaken node ran %d times", n)
	}
}

func TestHandleStaleAttempt(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "stale", "nodes": [
	  {"id": "wobbly", "uses": "probe", "params": {"failAttempts": 1}, "config": {"maxRetries": 3, "retryDelay": 10}},
	  {"id": "after", "uses": "probe"}],
	 "edges": [{"source": "wobbly", "target": "after"}]}`)
	runID, starts := tb.createRun(bp, nil)
	assertTargets(t, "attempt 1", tb.mustHandle(starts[0]), "wobbly:2")

	// Attempt 1 delivered again while the step waits for attempt 2.
	if jobs := tb.mustHandle(starts[0]); len(jobs) != 0 {
		t.Errorf("stale attempt replied %q, want no jobs", targets(jobs))
	}
	if n := tb.probes.count("wobbly"); n != 1 {
		t.Errorf("wobbly ran %d times, want 1 (the stale attempt must not run)", n)
	}
	if s := tb.step(runID, "wobbly"); s.State != workflow.StepRetrying || s.Attempts != 1 {
		t.Errorf("wobbly: %s after %d attempts, want retrying after 1", s.State, s.Attempts)
	}
	assertTargets(t, "attempt 2", tb.mustHandle(job(runID, "stale", "wobbly", 2)), "after:1")
}

const retryBlueprint = `{"id": "retry", "nodes": [
  {"id": "charge", "uses": "probe", "params": {"fail": "card declined"},
   "config": {"maxRetries": 3, "retryDelay": 200 %s}},
  {"id": "refund", "uses": "probe"},
  {"id": "ship", "uses": "probe"}],
 "edges": [{"source": "charge", "target": "ship"}]}`

// runRetries delivers charge's three attempts and checks the backoff of
// the first two replies; it returns the third's reply.
func (tb *testBundle) runRetries(runID string, start wire.Job) []wire.NextJob {
	t := tb.t
	t.Helper()
	j := start
	for _, c := range []struct {
		attempt  int
		min, max int64 // delay before the next attempt: retryDelay·2^(n-1), with equal jitter
	}{{1, 100, 200}, {2, 200, 400}} {
		before := time.Now()
		reply := tb.mustHandle(j)
		assertTargets(t, fmt.Sprintf("attempt %d", c.attempt), reply, fmt.Sprintf("charge:%d", c.attempt+1))
		if d := reply[0].DelayMs; d < c.min || d > c.max {
			t.Errorf("attempt %d: retry delay %d ms, want %d–%d ms", c.attempt, d, c.min, c.max)
		}
		s := tb.step(runID, "charge")
		if s.State != workflow.StepRetrying || s.Attempts != c.attempt || s.Error != "card declined" || s.WakeAt == nil {
			t.Fatalf("after attempt %d: step %s, %d attempts, error %q, wake_at %v", c.attempt, s.State, s.Attempts, s.Error, s.WakeAt)
		}
		due := time.Duration(reply[0].DelayMs) * time.Millisecond
		if s.WakeAt.Before(before.Add(due).Add(-time.Second)) || s.WakeAt.After(time.Now().Add(due).Add(time.Second)) {
			t.Errorf("after attempt %d: wake_at %s does not match the %s delay", c.attempt, s.WakeAt, due)
		}
		if r := tb.run(runID); r.Status != workflow.RunRunning {
			t.Fatalf("run %s after attempt %d", r.Status, c.attempt)
		}
		j = reply[0].Job
	}
	return tb.mustHandle(j)
}

func TestHandleRetries(t *testing.T) {
	t.Parallel()

	t.Run("fallback after the last attempt", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		runID, starts := tb.createRun(decodeBlueprint(t, fmt.Sprintf(retryBlueprint, `, "fallback": "refund"`)), map[string]any{"amount": 5})

		last := tb.runRetries(runID, starts[0])

		assertTargets(t, "last attempt", last, "refund:1")
		if last[0].DelayMs != 0 {
			t.Errorf("fallback delayed %d ms", last[0].DelayMs)
		}
		if s := tb.step(runID, "charge"); s.State != workflow.StepAwaitingFallback || s.Attempts != 3 || s.Error != "card declined" {
			t.Errorf("charge: %s after %d attempts (%q), want awaiting_fallback after 3", s.State, s.Attempts, s.Error)
		}
		// A duplicate of the last attempt re-emits the fallback, runs nothing.
		assertTargets(t, "duplicate last attempt", tb.mustHandle(job(runID, "retry", "charge", 3)), "refund:1")
		if n := tb.probes.count("charge"); n != 3 {
			t.Errorf("charge ran %d times, want 3", n)
		}

		tb.deliverAll(nil, last[0].Job)
		refund := map[string]any{"node": "refund", "attempt": 1, "input": map[string]any{"amount": 5}}
		tb.assertCompleted(runID, map[string]any{"refund": refund, "charge": refund,
			"ship": map[string]any{"node": "ship", "attempt": 1, "input": refund}})
		if s := tb.step(runID, "charge"); s.State != workflow.StepRecovered {
			t.Errorf("charge is %s, want recovered", s.State)
		}
	})

	t.Run("run fails without a fallback", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		runID, starts := tb.createRun(decodeBlueprint(t, fmt.Sprintf(retryBlueprint, "")), nil)

		last := tb.runRetries(runID, starts[0])

		if len(last) != 0 {
			t.Errorf("last attempt replied %q, want no jobs", targets(last))
		}
		r := tb.run(runID)
		if r.Status != workflow.RunFailed || r.Error != "card declined" || r.FinishedAt == nil {
			t.Errorf("run: %s %q finished %v, want failed with the node's message", r.Status, r.Error, r.FinishedAt)
		}
		if r.StatusData["error"] != "card declined" || r.StatusData["nodeId"] != "charge" {
			t.Errorf("status_data %v, want the node's error and id", r.StatusData)
		}
		if s := tb.step(runID, "charge"); s.State != workflow.StepFailed || s.Attempts != 3 {
			t.Errorf("charge: %s after %d attempts", s.State, s.Attempts)
		}
		if s := tb.step(runID, "ship"); s != nil {
			t.Errorf("ship has a step (%s) in a failed run", s.State)
		}
		if n := tb.probes.count("refund"); n != 0 {
			t.Errorf("refund ran %d times", n)
		}
	})
}

func TestHandleSleep(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "nap", "nodes": [
	  {"id": "start", "uses": "noop"},
	  {"id": "nap", "uses": "sleep", "params": {"duration": "1m"}},
	  {"id": "end", "uses": "probe"}],
	 "edges": [{"source": "start", "target": "nap"}, {"source": "nap", "target": "end"}]}`)
	runID, starts := tb.createRun(bp, map[string]any{"x": 1})
	napJob := tb.mustHandle(starts[0])
	assertTargets(t, "after start", napJob, "nap:1")

	// First call: the step sleeps, the reply is its own wake-up, delayed.
	before := time.Now()
	first := tb.mustHandle(napJob[0].Job)
	assertTargets(t, "sleep", first, "nap:1")
	if d := first[0].DelayMs; d < 59_000 || d > 60_000 {
		t.Errorf("wake-up delayed %d ms, want about 60000", d)
	}
	s := tb.step(runID, "nap")
	if s.State != workflow.StepSleeping || s.WakeAt == nil || s.WakeAt.Before(before.Add(59*time.Second)) || s.WakeAt.After(time.Now().Add(61*time.Second)) {
		t.Fatalf("nap: %s wake_at %v, want sleeping for a minute", s.State, s.WakeAt)
	}
	if r := tb.run(runID); r.Status != workflow.RunRunning {
		t.Fatalf("run is %s while sleeping", r.Status)
	}

	// Early delivery: the remaining delay, nothing run.
	early := tb.mustHandle(napJob[0].Job)
	assertTargets(t, "early delivery", early, "nap:1")
	if d := early[0].DelayMs; d > first[0].DelayMs || d < 55_000 {
		t.Errorf("early delivery: remaining delay %d ms, want ≤ %d and about a minute", d, first[0].DelayMs)
	}
	if again := tb.step(runID, "nap"); again.State != workflow.StepSleeping || !again.WakeAt.Equal(*s.WakeAt) {
		t.Errorf("early delivery changed the step: %s wake_at %v", again.State, again.WakeAt)
	}

	// Due: the step completes.
	tb.exec(`UPDATE `+tb.tables.Quoted().Steps+` SET wake_at = now() - interval '1 millisecond' WHERE run_id = $1 AND node_id = 'nap'`, runID)
	due := tb.mustHandle(napJob[0].Job)
	assertTargets(t, "due delivery", due, "end:1")
	if s := tb.step(runID, "nap"); s.State != workflow.StepSucceeded {
		t.Errorf("nap is %s after its due delivery", s.State)
	}
	tb.deliverAll(nil, due[0].Job)
	tb.assertCompleted(runID, map[string]any{"nap": map[string]any{"x": 1},
		"end": map[string]any{"node": "end", "attempt": 1, "input": map[string]any{"x": 1}}})
}

func TestHandleTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		config      string
		stepTimeout time.Duration
		want        string
	}{
		{"node timeout", `, "config": {"timeout": 100}`, 0, "node slow timed out after 100ms"},
		{"step timeout", ``, 150 * time.Millisecond, "node slow timed out after 150ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tb := setup(t, withStepTimeout(tc.stepTimeout))
			bp := decodeBlueprint(t, `{"id": "t", "nodes": [{"id": "slow", "uses": "slow", "params": {"ms": 20000}`+tc.config+`}]}`)
			runID, starts := tb.createRun(bp, nil)

			start := time.Now()
			jobs := tb.mustHandle(starts[0])

			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Handle took %s: the node was not cut off", took)
			}
			if len(jobs) != 0 {
				t.Errorf("reply %q, want none", targets(jobs))
			}
			if s := tb.step(runID, "slow"); s.State != workflow.StepFailed || s.Error != tc.want {
				t.Errorf("step: %s %q, want failed %q", s.State, s.Error, tc.want)
			}
			if r := tb.run(runID); r.Status != workflow.RunFailed || !strings.Contains(r.Error, "timed out") {
				t.Errorf("run: %s %q, want failed, timed out", r.Status, r.Error)
			}
		})
	}
}

func TestHandleContextWrites(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "ctx", "nodes": [
	  {"id": "paint", "uses": "set-context", "params": {"values": {"color": "blue", "size": 3}}},
	  {"id": "look", "uses": "probe", "params": {"read": "color"}},
	  {"id": "shaky", "uses": "probe", "params": {"setAttempt": "tried", "failAttempts": 1}, "config": {"maxRetries": 2}}],
	 "edges": [{"source": "paint", "target": "look"}, {"source": "look", "target": "shaky"}]}`)
	runID, starts := tb.createRun(bp, map[string]any{"user": "ann"})

	look := tb.mustHandle(starts[0])
	shaky := tb.mustHandle(look[0].Job)
	retry := tb.mustHandle(shaky[0].Job)
	assertTargets(t, "shaky attempt 1", retry, "shaky:2")
	ctxData, err := tb.store.Context(tb.ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ctxData["tried1"]; ok {
		t.Errorf("the failed attempt's write is in the context: %v", ctxData)
	}
	if jobs := tb.mustHandle(retry[0].Job); len(jobs) != 0 {
		t.Errorf("last node replied %q", targets(jobs))
	}

	r := tb.assertCompleted(runID, map[string]any{"look": map[string]any{"read": "blue"}})
	for k, want := range map[string]any{"user": "ann", "color": "blue", "size": 3, "tried2": true} {
		testenv.AssertJSON(t, "status_data."+k, r.StatusData[k], want)
	}
	if _, ok := r.StatusData["tried1"]; ok {
		t.Errorf("final context has the failed attempt's write: %v", r.StatusData)
	}
	final, err := tb.store.Context(tb.ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	testenv.AssertJSON(t, "context row", final, r.StatusData)
}

func TestHandleCancelledRun(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)
	if st, err := tb.store.Cancel(tb.ctx, runID); err != nil || st != workflow.RunCancelled {
		t.Fatalf("cancel: %s %v", st, err)
	}

	jobs := tb.mustHandle(starts[0])

	if len(jobs) != 0 {
		t.Errorf("cancelled run replied %q", targets(jobs))
	}
	if n := tb.probes.count("first"); n != 0 {
		t.Errorf("node of a cancelled run ran %d times", n)
	}
	if s := tb.step(runID, "first"); s.State != workflow.StepReady || s.Attempts != 0 {
		t.Errorf("step of a cancelled run: %s after %d attempts", s.State, s.Attempts)
	}
	if r := tb.run(runID); r.Status != workflow.RunCancelled {
		t.Errorf("run is %s", r.Status)
	}
}

func TestReadyAndAlive(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(o *options) { o.noStart = true })
	ctx := tb.ctx

	if ready, err := tb.f.Ready(ctx); ready || err != nil {
		t.Errorf("Ready before start: %v %v, want false", ready, err)
	}
	if alive, err := tb.f.Alive(ctx); !alive || err != nil {
		t.Errorf("Alive before start: %v %v, want true", alive, err)
	}
	_, err := tb.handle(nil, job("r", "pair", "first", 1))
	assertRejected(t, "Handle before start", err, http.StatusServiceUnavailable, "not started")

	tb.startFunction(tb.f, 0)
	if ready, err := tb.f.Ready(ctx); !ready || err != nil {
		t.Errorf("Ready after start: %v %v, want true", ready, err)
	}
	if alive, err := tb.f.Alive(ctx); !alive || err != nil {
		t.Errorf("Alive after start: %v %v, want true", alive, err)
	}
	if err := tb.f.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if ready, _ := tb.f.Ready(ctx); ready {
		t.Errorf("Ready after Stop: true")
	}

	// A configuration it cannot start with: not alive, and Ready says why.
	bad := tb.newFunction()
	if err := bad.Start(ctx, map[string]string{"STEP_TIMEOUT": "soon"}); err == nil || !strings.Contains(err.Error(), "STEP_TIMEOUT") {
		t.Errorf("Start with a bad STEP_TIMEOUT: %v", err)
	}
	if alive, _ := bad.Alive(ctx); alive {
		t.Errorf("Alive after a failed start: true")
	}
	if ready, err := bad.Ready(ctx); ready || err == nil {
		t.Errorf("Ready after a failed start: %v %v, want false with the error", ready, err)
	}
}

// flowcraftRun records a run the way the Flowcraft adapter does: a context
// row holding blueprintId/blueprintVersion and the input, and a status row
// with only the adapter's columns.
func (tb *testBundle) flowcraftRun(blueprintID, version string, input string) string {
	tb.t.Helper()
	runID := "fc-" + testenv.RandomHex(6)
	tb.exec(`INSERT INTO `+tb.tables.Quoted().Contexts+` (run_id, context_data) VALUES ($1, jsonb_build_object('blueprintId', $2::text, 'blueprintVersion', $3::text) || $4::jsonb)`,
		runID, blueprintID, version, input)
	tb.exec(`INSERT INTO `+tb.tables.Quoted().Statuses+` (run_id, status, status_data, updated_at) VALUES ($1, 'running', NULL, now())`, runID)
	return runID
}

func TestFlowcraftStartedRun(t *testing.T) {
	t.Parallel()
	bp := decodeBlueprint(t, `{"id": "fc", "metadata": {"version": "1"}, "nodes": [
	  {"id": "double", "uses": "transform", "params": {"expression": "input.n * 2"}},
	  {"id": "inc", "uses": "transform", "params": {"expression": "input + 1"}},
	  {"id": "dec", "uses": "transform", "params": {"expression": "input - 1"}},
	  {"id": "sum", "uses": "transform", "params": {"expression": "input.inc + input.dec"}}],
	 "edges": [{"source": "double", "target": "inc"}, {"source": "double", "target": "dec"},
	           {"source": "inc", "target": "sum"}, {"source": "dec", "target": "sum"}]}`)
	tb := setup(t, withBlueprints(bp))
	runID := tb.flowcraftRun("fc", "1", `{"n": 3}`)

	// The adapter's start job: no attempt.
	first := tb.mustHandle(wire.Job{RunID: runID, BlueprintID: "fc", NodeID: "double"})

	assertTargetSet(t, "after double", first, "dec:1", "inc:1")
	r := tb.run(runID)
	if r.Digest != bp.Digest() || r.BlueprintID != "fc" {
		t.Errorf("run pinned to %s %q, want %s fc", r.Digest, r.BlueprintID, bp.Digest())
	}
	var snapshots int
	if err := tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM `+tb.tables.Quoted().Blueprints+` WHERE digest = $1`, bp.Digest()).Scan(&snapshots); err != nil || snapshots != 1 {
		t.Errorf("snapshot rows: %d %v, want 1", snapshots, err)
	}
	if s := tb.step(runID, "double"); s.State != workflow.StepSucceeded {
		t.Errorf("double is %s", s.State)
	} else {
		testenv.AssertJSON(t, "double's input", s.Input, map[string]any{"n": 3})
	}

	jobs := make([]wire.Job, 0, len(first))
	for _, j := range first {
		jobs = append(jobs, j.Job)
	}
	tb.deliverAll(nil, jobs...)
	want := map[string]any{"double": 6, "inc": 7, "dec": 5, "sum": 12}
	r = tb.assertCompleted(runID, want)
	for _, n := range bp.Nodes {
		if _, ok := r.StatusData[workflow.OutputKey(n.ID)]; !ok {
			t.Errorf("status_data lacks %s", workflow.OutputKey(n.ID))
		}
	}
	testenv.AssertJSON(t, "status_data.n", r.StatusData["n"], 3)
}

func TestRunKeepsItsPinnedBlueprint(t *testing.T) {
	t.Parallel()
	version := func(v string) *workflow.Blueprint {
		return decodeBlueprint(t, strings.ReplaceAll(`{"id": "pin", "metadata": {"version": "V"}, "nodes": [
		  {"id": "a", "uses": "transform", "params": {"expression": "\"vV\""}},
		  {"id": "b", "uses": "transform", "params": {"expression": "input + \"-bV\""}},
		  {"id": "c", "uses": "transform", "params": {"expression": "input + \"-cV\""}}],
		 "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}`, "V", v))
	}
	v1, v2 := version("1"), version("2")
	tb := setup(t, withBlueprints(v1))
	wantV1 := map[string]any{"a": "v1", "b": "v1-b1", "c": "v1-b1-c1"}

	// A Flowcraft-style run pins v1 at its first step.
	fcRun := tb.flowcraftRun("pin", "1", `{}`)
	next := tb.mustHandle(job(fcRun, "pin", "a", 1))
	// A client-started run pins v1 at its start.
	clientRun, starts := tb.createRun(v1, nil)

	// v2 is deployed: registered in this instance, and the only version a
	// fresh instance knows.
	if err := tb.f.Register(v2); err != nil {
		t.Fatal(err)
	}
	next = tb.mustHandle(next[0].Job)
	assertTargets(t, "after b", next, "c:1")
	fresh := tb.newFunction(v2)
	tb.startFunction(fresh, 0)
	tb.deliverAll(fresh, next[0].Job)
	tb.assertCompleted(fcRun, wantV1)

	tb.deliverAll(fresh, starts...)
	tb.assertCompleted(clientRun, wantV1)

	// A run started after the deploy gets v2.
	newRun := tb.flowcraftRun("pin", "2", `{}`)
	tb.deliverAll(fresh, job(newRun, "pin", "a", 1))
	tb.assertCompleted(newRun, map[string]any{"a": "v2", "b": "v2-b2", "c": "v2-b2-c2"})
}

// The context the step functions run under ends with the request: a
// cancelled request commits nothing and is answered 503 (retry).
func TestHandleCancelledRequestCommitsNothing(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "c", "nodes": [{"id": "slow", "uses": "slow", "params": {"ms": 20000}}]}`)
	runID, starts := tb.createRun(bp, nil)
	ctx, cancel := context.WithTimeout(tb.ctx, 200*time.Millisecond)
	defer cancel()

	resp, err := tb.f.Handle(ctx, jobEvent(starts[0]))

	if resp != nil {
		t.Errorf("reply event %v", resp)
	}
	assertRejected(t, "cancelled request", err, http.StatusServiceUnavailable, "context")
	if s := tb.step(runID, "slow"); s.State != workflow.StepReady || s.Attempts != 0 {
		t.Errorf("step after a cancelled request: %s after %d attempts, want ready, untouched", s.State, s.Attempts)
	}
	if r := tb.run(runID); r.Status != workflow.RunRunning {
		t.Errorf("run is %s", r.Status)
	}
	if keys, _ := tb.redisKeys(tb.ctx); len(keys) != 0 {
		t.Errorf("lease left behind: %q", keys)
	}
}

// A transform node's expression reads another node's output (outputs.<id>,
// documented in workflow/expr.go): the step function loads that output (it
// is in the node's OutputRefs) and must give it to the node, as the local
// runner does.
func TestTransformNodeReadsOtherOutputs(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "refs", "nodes": [
	  {"id": "a", "uses": "transform", "params": {"expression": "5"}},
	  {"id": "b", "uses": "noop"},
	  {"id": "c", "uses": "transform", "params": {"expression": "outputs.a + input"}}],
	 "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}`)
	local, err := workflow.Run(tb.ctx, bp, tb.reg, nil, workflow.RunOptions{})
	if err != nil {
		t.Fatalf("local run: %v", err)
	}
	if local.Status != workflow.RunCompleted {
		t.Fatalf("local run %s: %+v", local.Status, local.Errors)
	}

	runID, starts := tb.createRun(bp, nil)
	tb.deliverAll(nil, starts...)

	r := tb.run(runID)
	if r.Status != workflow.RunCompleted {
		t.Fatalf("run is %s (%s); the local runner completed it with %v", r.Status, r.Error, local.Context)
	}
	testenv.AssertJSON(t, "local runner's output of c", local.Context[workflow.OutputKey("c")], 10)
	testenv.AssertJSON(t, "output of c", r.StatusData[workflow.OutputKey("c")], 10)
}

// A node whose output is over STEPFLOW_MAX_OUTPUT_BYTES fails its attempt
// with an error naming the node and the limit (retries apply), and nothing
// of it is stored; a bad limit is refused naming the variable.
func TestHandleOutputOverTheLimit(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.reg.Register("big", func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: strings.Repeat("x", function.DefaultMaxOutputBytes)}, nil
	})
	f := tb.newFunction()
	tb.startFunction(f, 0)
	bp := decodeBlueprint(t, `{"id": "big", "nodes": [{"id": "huge", "uses": "big"}]}`)
	runID, starts := tb.createRun(bp, nil)
	ev := jobEvent(starts[0])
	if _, err := f.Handle(tb.ctx, ev); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	want := fmt.Sprintf("node huge: output is %d bytes of JSON, over the limit of %d (STEPFLOW_MAX_OUTPUT_BYTES)", function.DefaultMaxOutputBytes+2, function.DefaultMaxOutputBytes)
	if s := tb.step(runID, "huge"); s.State != workflow.StepFailed || s.Error != want || s.Output != nil {
		t.Errorf("step: %s %q output %v, want failed %q without an output", s.State, s.Error, s.Output != nil, want)
	}
	if r := tb.run(runID); r.Status != workflow.RunFailed {
		t.Errorf("run: %s, want failed", r.Status)
	}
	for _, v := range []string{"12", "lots", fmt.Sprint(512 << 20)} {
		if _, err := function.ConfigFromMap(map[string]string{"STEPFLOW_MAX_OUTPUT_BYTES": v}); err == nil || !strings.Contains(err.Error(), "STEPFLOW_MAX_OUTPUT_BYTES") {
			t.Errorf("STEPFLOW_MAX_OUTPUT_BYTES=%s: %v, want an error naming it", v, err)
		}
	}
}
